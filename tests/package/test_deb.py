"""The .deb installs, upgrades, rolls back and goes away on a machine with no network."""

from __future__ import annotations

import json

import pytest

from tests.package.conftest import NEW, OLD, Releases
from tests.package.sandbox import OfflineRoot

pytestmark = [pytest.mark.package, pytest.mark.timeout(1800)]

CONFIG = "/etc/etong/etong.toml"
# setpriv execs (no process between): a SIGTERM reaches the daemon, and its exit code us.
AS_ETONG = "setpriv --reuid=etong --regid=etong --init-groups --"

# A broker on the shipped config's 127.0.0.1:1883, the daemon as the etong user until it is
# ready, the simulated terminals, then a graceful stop: a store with reports in it.
MAKE_DATA = f"""
printf 'listener 1883 127.0.0.1\\nallow_anonymous true\\n' >/tmp/mosquitto.conf
mosquitto -c /tmp/mosquitto.conf >/tmp/mosquitto.log 2>&1 &
wait_for 30 port_open 1883
{AS_ETONG} etong run --config {CONFIG} >/tmp/etong.log 2>&1 &
daemon=$!
wait_for 60 {AS_ETONG} etong status --config {CONFIG}
{AS_ETONG} etong simulate --config {CONFIG} --rate 20 --duration 2 --seed 7 >&2
kill -TERM $daemon
wait $daemon
"""
# Counts from the store, as the etong user; exit 3 only says the daemon is not running.
STATUS = f"{AS_ETONG} etong status --json --config {CONFIG} || [ $? = 3 ]"


def _counts(output: str) -> dict[str, int]:
    status = json.loads(output)
    return {k: v for k, v in status.items() if isinstance(v, int) and not isinstance(v, bool)}


def test_the_root_has_no_network(offline_root: OfflineRoot) -> None:
    out = offline_root.check(
        "ip -o link | awk '{print $2}'; echo routes: $(ip route; ip -6 route | grep -v '^::1')\n"
        "python3.11 -c 'import socket; socket.create_connection((\"192.0.2.1\", 443), 3)' "
        "2>&1 | tail -1 || true"
    )

    assert out.splitlines()[0] == "lo:", out
    assert "routes: \n" in out or "routes:\n" in out, out
    assert "Network is unreachable" in out, out


def test_deb_installs_offline_then_checks_its_example_config_and_runs_the_demo(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    out = offline_root.check(
        f"""
        dpkg -i {releases.deb(OLD)} >&2
        etong --version
        stat -c '%a %U:%G %n' /var/lib/etong /etc/etong {CONFIG} /etc/etong/roster.toml
        getent passwd etong | cut -d: -f7
        dpkg-query -W -f='${{Conffiles}}\\n' etong | awk '{{print $1}}' | sort
        readlink /usr/bin/etong
        /opt/etong/bin/python -c 'import pip' 2>/dev/null && echo "pip is inside" || true
        {AS_ETONG} etong check-config --config {CONFIG}
        etong demo --reports 30
        """
    )

    assert f"etong {OLD} (commit " in out
    assert "700 etong:etong /var/lib/etong" in out
    assert "750 root:etong /etc/etong" in out
    assert f"640 root:etong {CONFIG}" in out
    assert "640 root:etong /etc/etong/roster.toml" in out
    assert "/usr/sbin/nologin" in out
    assert "/etc/etong/etong.toml\n/etc/etong/mosquitto.conf\n/etc/etong/roster.toml" in out
    assert "/opt/etong/bin/etong" in out
    assert "pip is inside" not in out
    assert "demo passed" in out, out


def test_remove_keeps_config_and_data_and_purge_keeps_only_the_data(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    offline_root.check(f"dpkg -i {releases.deb(OLD)} >&2\n{MAKE_DATA}")

    removed = offline_root.check(
        "dpkg -r etong >&2\nls /opt/etong /usr/bin/etong 2>&1 || true\nls /etc/etong /var/lib/etong"
    )
    purged = offline_root.run("dpkg -P etong\nls /etc/etong 2>&1 || true\nls /var/lib/etong")

    assert "/opt/etong': No such file" in removed and "/usr/bin/etong': No such file" in removed
    assert "etong.toml" in removed and "roster.toml" in removed and "etong.db" in removed
    assert purged.returncode == 0, purged.stderr
    assert "/etc/etong': No such file" in purged.stdout
    assert "etong.db" in purged.stdout and "pii.key" in purged.stdout
    assert "kept /var/lib/etong" in purged.stderr


def test_upgrade_keeps_the_store_its_keys_and_the_edited_config(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    offline_root.check(
        f"dpkg -i {releases.deb(OLD)} >&2\nsed -i 's/^days = 180/days = 90/' {CONFIG}\n{MAKE_DATA}"
    )
    key = "sha256sum /var/lib/etong/pii.key"
    key_before, counts_before = offline_root.check(key), _counts(offline_root.check(STATUS))

    offline_root.check(f"dpkg -i {releases.deb(NEW)} >&2")

    assert counts_before["events"] > 0, counts_before
    assert _counts(offline_root.check(STATUS)) == counts_before
    assert offline_root.check(key) == key_before
    after = offline_root.check(f"etong --version; grep '^days' {CONFIG}")
    assert f"etong {NEW} (commit " in after
    assert "days = 90" in after


def test_rollback_works_on_the_same_schema_and_is_refused_on_a_newer_one(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    offline_root.check(f"dpkg -i {releases.deb(NEW)} >&2\n{MAKE_DATA}")

    same_schema = offline_root.run(f"dpkg -i {releases.deb(OLD)} && etong --version")
    offline_root.check(
        f"dpkg -i {releases.deb(NEW)} >&2\n"
        'python3.11 -c \'import sqlite3; db = sqlite3.connect("/var/lib/etong/etong.db"); '
        'v = db.execute("PRAGMA user_version").fetchone()[0]; '
        'db.execute(f"PRAGMA user_version={v + 1}"); db.commit()\''
    )
    newer_schema = offline_root.run(f"dpkg -i {releases.deb(OLD)}")
    still = offline_root.check("dpkg-query -W -f='${Version}\\n' etong; etong --version")

    assert same_schema.returncode == 0, same_schema.stderr
    assert f"etong {OLD} (commit " in same_schema.stdout
    assert newer_schema.returncode != 0
    assert "refusing to install: the store /var/lib/etong/etong.db has schema version" in (
        newer_schema.stderr
    )
    assert still.splitlines()[0] == NEW
    assert f"etong {NEW} (commit " in still

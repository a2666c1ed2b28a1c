"""The offline tarball: checksums and signature verify, install.sh installs and upgrades with
no network, keeps an edited config, and uninstalls without touching the config or the data."""

from __future__ import annotations

import subprocess

import pytest

from tests.package.conftest import NEW, OLD, Releases
from tests.package.sandbox import OfflineRoot

pytestmark = [pytest.mark.package, pytest.mark.timeout(1800)]

CONFIG = "/etc/etong/etong.toml"


def _install_sh(releases: Releases, version: str, *args: str) -> str:
    """Unpack the tarball in the root's /tmp and run its install.sh with `args`."""
    name = releases.tarball(version).name
    return (
        f"tar -xzf /release/{version}/{name} -C /tmp\n"
        f"/tmp/{name.removesuffix('.tar.gz')}/install.sh {' '.join(args)}\n"
    )


def test_checksums_and_signature_verify(releases: Releases) -> None:
    folder = releases.base / NEW
    sums = subprocess.run(
        ["sha256sum", "--check", "SHA256SUMS"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    allowed = releases.base / "allowed_signers"
    allowed.write_text(f"etong-release {releases.signer.read_text()}")
    verify = [
        "ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "etong-release",
        "-n", "file", "-s", str(folder / "SHA256SUMS.sig"),
    ]  # fmt: skip
    signed = (folder / "SHA256SUMS").read_bytes()
    good = subprocess.run(verify, input=signed, capture_output=True, check=False)
    forged = subprocess.run(verify, input=signed + b"\n", capture_output=True, check=False)

    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == 2
    assert good.returncode == 0, good.stderr
    assert forged.returncode != 0
    assert not (releases.base / OLD / "SHA256SUMS.sig").exists()  # no key, no signature


def test_install_sh_installs_offline_and_the_example_config_checks(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    out = offline_root.check(
        _install_sh(releases, OLD)
        + f"""
        etong --version
        stat -c '%a %U:%G %n' /var/lib/etong /etc/etong {CONFIG}
        setpriv --reuid=etong --regid=etong --init-groups -- etong check-config --config {CONFIG}
        """
    )

    assert f"etong {OLD} (commit " in out
    assert "700 etong:etong /var/lib/etong" in out
    assert f"640 root:etong {CONFIG}" in out
    assert "store: /var/lib/etong/etong.db\nroster: /etc/etong/roster.toml (" in out
    assert out.splitlines()[-1] == "OK"


def test_install_sh_upgrade_keeps_an_edited_config_and_uninstall_keeps_config_and_data(
    offline_root: OfflineRoot, releases: Releases
) -> None:
    offline_root.check(
        _install_sh(releases, OLD)
        + f"sed -i 's/^days = 180/days = 90/' {CONFIG}\n"
        + "install -d -o etong -g etong -m 0700 /var/lib/etong && touch /var/lib/etong/etong.db\n"
    )

    upgraded = offline_root.check(_install_sh(releases, NEW) + f"grep '^days' {CONFIG}")
    removed = offline_root.check(
        _install_sh(releases, NEW, "--uninstall")
        + "ls /opt/etong /usr/bin/etong 2>&1 || true\nls /etc/etong /var/lib/etong"
    )

    assert f"installed etong {NEW} (commit " in upgraded
    assert f"kept your {CONFIG}; the shipped one is {CONFIG}.new" in upgraded
    assert "days = 90" in upgraded
    assert "/opt/etong': No such file" in removed and "/usr/bin/etong': No such file" in removed
    assert "etong.toml" in removed and "etong.db" in removed

# Shared by the Debian preinst and the tarball's install.sh (scripts/package pastes it in):
# refuse to install an etong older than the store it would open.
#
# `etong run` refuses a store whose schema is newer than the code knows (store/sqlite.py,
# store/postgres_schema.py: "newer than this etong"), but only at start, after the older
# code has replaced the newer one. Checked here, the install stops first and the installed
# etong keeps running. Only the SQLite store is read (read-only, with the stdlib); a
# PostgreSQL store (store.url) is left to `etong run`, which refuses it with the same words.
#
# etong_refuse_newer_store KNOWN_SQLITE_SCHEMA [CONFIG]: exit status 1 (and the reason on
# stderr) when the configured store's schema version is above KNOWN_SQLITE_SCHEMA.
etong_refuse_newer_store() {
    [ -x /usr/bin/python3.11 ] || return 0
    /usr/bin/python3.11 - "$1" "${2:-/etc/etong/etong.toml}" <<'ETONG_STORE_CHECK'
import sqlite3
import sys
import tomllib
from pathlib import Path

known, config = int(sys.argv[1]), Path(sys.argv[2])
try:
    section = tomllib.loads(config.read_text(encoding="utf-8")).get("store", {})
except (OSError, ValueError):
    section = {}  # no config yet, or one `etong check-config` will name the problems of
if section.get("url"):
    sys.exit(0)
store = config.parent / section.get("path", "/var/lib/etong/etong.db")
if not store.is_file():
    sys.exit(0)
try:
    with sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True) as db:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
except sqlite3.Error as exc:
    print(f"etong: could not read the schema version of {store} ({exc}); "
          "`etong run` checks it at start", file=sys.stderr)
    sys.exit(0)
if version > known:
    print(
        f"etong: refusing to install: the store {store} has schema version {version}, and "
        f"this etong knows versions up to {known} (the store was migrated by a newer etong).\n"
        "  To go back to this version, stop etong, restore the backup taken before the "
        "upgrade (docs/OPERATIONS.md, \"Installing on a closed network\"), then install "
        "this package again. Or keep the newer etong installed.",
        file=sys.stderr,
    )
    sys.exit(1)
ETONG_STORE_CHECK
}

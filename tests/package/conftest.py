"""The package tier: scripts/package builds two releases once per session, and each test
installs them with no network (sandbox.py). Needs root and unshare, as CI has."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.package.sandbox import OfflineRoot

ROOT = Path(__file__).parents[2]
OLD, NEW = "0.1.0+test1", "0.1.0+test2"
# Two builds on a loaded 2-core machine: minutes, not seconds.
BUILD_TIMEOUT_S = 1500


@dataclass(frozen=True)
class Releases:
    """Two builds of this checkout: `old` and `new` are folders at /release/<name>/ in an
    OfflineRoot; `new` is signed with the key whose public half is `signer`."""

    base: Path
    signer: Path

    def deb(self, version: str) -> str:
        """The .deb's path inside an OfflineRoot."""
        return f"/release/{version}/etong_{version}_amd64.deb"

    def tarball(self, version: str) -> Path:
        """The tarball's path on this machine."""
        return self.base / version / f"etong-{version}-linux-x86_64.tar.gz"


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """Both releases, built side by side (the registry waits overlap)."""
    assert os.geteuid() == 0, "the package tests install into a namespace: run them as root"
    base = tmp_path_factory.mktemp("releases")
    key = base / "signing-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "etong-release", "-f", str(key)],
        check=True,
    )
    builds = {}
    for version in (OLD, NEW):
        env = {**os.environ, "ETONG_PACKAGE_VERSION": version}
        if version == NEW:
            env["ETONG_SIGNING_KEY"] = str(key)
        log = (base / f"build-{version}.log").open("w")
        builds[version] = (
            subprocess.Popen(
                [str(ROOT / "scripts" / "package"), "--out", str(base / version)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            ),
            log,
        )
    try:
        for version, (process, log) in builds.items():
            code = process.wait(timeout=BUILD_TIMEOUT_S)
            log.close()
            output = (base / f"build-{version}.log").read_text()
            assert code == 0, f"scripts/package {version} failed:\n{output}"
    finally:
        for process, log in builds.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return Releases(base=base, signer=key.with_suffix(".pub"))


@pytest.fixture
def offline_root(tmp_path: Path, releases: Releases) -> OfflineRoot:
    """A fresh root with no network, with both releases at /release."""
    return OfflineRoot(tmp_path / "root", releases.base)

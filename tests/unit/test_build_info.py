"""`etong --version` names the release and the commit it was built from."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from etong import __version__
from etong.build_info import GENERATED_MODULE, UNKNOWN, build_info, git_commit
from etong.cli import main


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "file.txt").write_text("one\n")
    _git(tmp_path, "add", "file.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return tmp_path


@pytest.fixture
def packaged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module scripts/package writes, as if this etong had been packaged."""
    module = types.ModuleType(GENERATED_MODULE)
    module.VERSION = "1.4.2~rc1"  # type: ignore[attr-defined]
    module.COMMIT = "0123456789ab"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, GENERATED_MODULE, module)


def test_a_checkout_is_described_by_its_commit(repo: Path) -> None:
    assert git_commit(repo) == _git(repo, "rev-parse", "--short=12", "HEAD")


def test_a_checkout_with_uncommitted_changes_says_dirty(repo: Path) -> None:
    (repo / "file.txt").write_text("two\n")

    assert git_commit(repo) == _git(repo, "rev-parse", "--short=12", "HEAD") + "-dirty"


def test_a_folder_that_is_not_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == UNKNOWN


def test_without_git_the_commit_is_unknown(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))

    assert git_commit(repo) == UNKNOWN


def test_an_unpackaged_etong_has_the_source_version_and_the_checkout_commit(repo: Path) -> None:
    info = build_info(checkout=repo)

    assert info.version == __version__
    assert info.commit == _git(repo, "rev-parse", "--short=12", "HEAD")


@pytest.mark.usefixtures("packaged")
def test_a_packaged_etong_names_the_build_it_was_made_from(tmp_path: Path) -> None:
    assert build_info(checkout=tmp_path).line() == "etong 1.4.2~rc1 (commit 0123456789ab)"


@pytest.mark.usefixtures("packaged")
def test_version_flag_prints_the_version_and_commit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == "etong 1.4.2~rc1 (commit 0123456789ab)\n"

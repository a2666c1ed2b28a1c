"""The cluster's config keys (DESIGN §4, §7): `[store] url`, `password_file`, `[cluster]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from etong.config import parse_settings
from etong.errors import ConfigError


def parse(tmp_path: Path, **sections: dict[str, object]) -> object:
    return parse_settings(dict(sections), config_path=tmp_path / "etong.toml")


def problems(tmp_path: Path, **sections: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, **sections)
    return caught.value.problems


def test_a_postgresql_url_makes_a_cluster_store_and_sqlite_stays_the_default(
    tmp_path: Path,
) -> None:
    settings = parse_settings({}, config_path=tmp_path / "etong.toml")
    assert not settings.store.is_postgres
    url = "postgresql://etong@db.example:5432/etong"
    settings = parse_settings(
        {"store": {"url": url}, "cluster": {"lease_s": 15}}, config_path=tmp_path / "e.toml"
    )
    assert settings.store.is_postgres and settings.store.url == url
    assert settings.cluster.lease_s == 15


def test_a_url_that_is_not_postgresql_is_refused_naming_the_key(tmp_path: Path) -> None:
    found = problems(tmp_path, store={"url": "mysql://db/etong"})
    assert found[0].startswith("store.url: ")
    assert "postgresql://" in found[0]


def test_a_password_in_the_url_is_refused_and_points_at_password_file(tmp_path: Path) -> None:
    found = problems(tmp_path, store={"url": "postgresql://etong:s3cret@db/etong"})
    assert "store.password_file" in found[0]
    assert "s3cret" not in " ".join(found)


def test_the_password_file_is_read_from_its_first_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\nignored\n", encoding="utf-8")
    settings = parse_settings(
        {"store": {"url": "postgresql://etong@db/etong", "password_file": str(tmp_path / "pw")}},
        config_path=tmp_path / "etong.toml",
    )
    assert settings.store.read_password() == "s3cret"


def test_cluster_settings_without_a_postgresql_store_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, cluster={"lease_s": 10})
    assert found == [
        "cluster: needs a PostgreSQL store (store.url); one SQLite file has one instance"
    ]


def test_a_lease_shorter_than_three_seconds_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, store={"url": "postgresql://db/e"}, cluster={"lease_s": 1})
    assert found[0].startswith("cluster.lease_s: ")

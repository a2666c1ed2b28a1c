"""The PostgreSQL store's URL: one server, or a primary and its standbys (libpq's host list)."""

from __future__ import annotations

import pytest

from etong.errors import StoreError
from etong.store.postgres_connect import Target


def test_one_server_gets_libpq_defaults() -> None:
    target = Target.from_url("postgresql://db.example/etong")
    assert (target.hosts, target.user, target.database) == (
        (("db.example", 5432),),
        "postgres",
        "etong",
    )
    assert target.where == "database etong on db.example:5432"


def test_a_host_list_names_every_server_in_order_and_messages_name_them_all() -> None:
    url = "postgresql://etong@db1:5433,db2,[::1]:5434/province?target_session_attrs=read-write"
    target = Target.from_url(url)
    assert target.hosts == (("db1", 5433), ("db2", 5432), ("::1", 5434))
    assert (target.host, target.port, target.user) == ("db1", 5433, "etong")
    assert target.where == "database province on db1:5433,db2:5432,::1:5434"
    assert target.url == url  # the driver gets the URL whole, host list and options


def test_a_bad_port_in_a_host_list_is_named() -> None:
    with pytest.raises(StoreError, match="bad port in 'db2:x'"):
        Target.from_url("postgresql://etong@db1,db2:x/etong")

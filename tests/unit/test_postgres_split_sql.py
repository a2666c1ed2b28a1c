"""How a PostgreSQL migration script is cut into statements (`postgres_schema.split_sql`)."""

from __future__ import annotations

from etong.store.postgres_schema import MIGRATIONS, split_sql


def test_statements_are_cut_at_semicolons_but_a_function_body_stays_whole() -> None:
    script = """
    CREATE TABLE a (x int);  -- a comment; with a semicolon
    CREATE FUNCTION f() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'no';
        RETURN true;
    END
    $$;
    CREATE TABLE b (y int);
    """
    assert [" ".join(s.split()) for s in split_sql(script)] == [
        "CREATE TABLE a (x int)",
        "CREATE FUNCTION f() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
        "'no'; RETURN true; END $$",
        "CREATE TABLE b (y int)",
    ]


def test_the_write_statements_refusal_function_is_migration_5s_one_statement() -> None:
    [statement] = split_sql(MIGRATIONS[5 - 1])
    assert statement.startswith("CREATE OR REPLACE FUNCTION etong_refuse")
    assert statement.endswith("$$")

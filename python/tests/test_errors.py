"""Each CV code raised from SQL arrives as its own Python exception."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT

from covenant import errors
from covenant.config import load_settings
from covenant.db import Connector


def _raise_in_sql(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> BaseException:
    with conn.transaction(), pytest.raises(psycopg.Error) as caught:
        conn.execute(sql.encode())
    return errors.translate(caught.value)


@pytest.mark.parametrize("cls", errors.DOMAIN_ERRORS, ids=lambda c: c.name)
def test_raw_sqlstate_maps_to_its_exception(
    conn: psycopg.Connection[tuple[object, ...]], cls: type[errors.CovenantError]
) -> None:
    mapped = _raise_in_sql(
        conn,
        f"DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{cls.code}'; END $$",
    )
    assert type(mapped) is cls
    assert isinstance(mapped, errors.CovenantError)
    assert mapped.sqlstate == cls.code
    assert isinstance(mapped.__cause__, psycopg.Error)


@pytest.mark.parametrize("cls", errors.DOMAIN_ERRORS, ids=lambda c: c.name)
def test_covenant_raise_helper_uses_the_catalogue(
    conn: psycopg.Connection[tuple[object, ...]], cls: type[errors.CovenantError]
) -> None:
    mapped = _raise_in_sql(
        conn, f"SELECT covenant._raise('{cls.name}', 'details here', 'the detail', 'the hint')"
    )
    assert type(mapped) is cls
    assert isinstance(mapped, errors.CovenantError)
    assert mapped.message == f"{cls.name}: details here"
    assert mapped.detail == "the detail"
    assert mapped.hint == "the hint"


def test_unknown_error_name_is_a_programming_error(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    mapped = _raise_in_sql(conn, "SELECT covenant._raise('NO_SUCH_ERROR', 'x')")
    assert isinstance(mapped, psycopg.Error)
    assert mapped.sqlstate == "P0004"


def test_constraint_name_maps_when_sqlstate_is_generic(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE skew (t timestamptz, "
            "CONSTRAINT event_time_skew CHECK (t > now() - interval '5 minutes'))"
        )
    mapped = _raise_in_sql(conn, "INSERT INTO skew VALUES (now() - interval '1 hour')")
    assert isinstance(mapped, errors.EventTimeSkew)
    assert mapped.sqlstate == "23514"
    assert mapped.constraint == "event_time_skew"


def test_unmapped_errors_pass_through(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    mapped = _raise_in_sql(conn, "SELECT 1 / 0")
    assert isinstance(mapped, psycopg.errors.DivisionByZero)


def test_python_catalogue_equals_database_catalogue(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    rows = conn.execute(
        "SELECT code, name, meaning, retryable, http_status FROM covenant.error_codes ORDER BY code"
    ).fetchall()
    assert {errors.ErrorCode(*row) for row in rows} == set(errors.catalogue())  # type: ignore[arg-type]


def _docs_table() -> set[tuple[str, str, str, str]]:
    text = (ROOT / "docs" / "errors.md").read_text()
    found = set()
    for line in text.splitlines():
        m = re.match(r"^\|\s*(CV\d{3})\s*\|\s*(\w+)\s*\|(.+?)\|\s*(yes|no)\s*\|\s*(\d{3})", line)
        if m:
            found.add((m.group(1), m.group(2), m.group(4), m.group(5)))
    return found


def test_docs_table_equals_python_catalogue() -> None:
    expected = {
        (e.code, e.name, "yes" if e.retryable else "no", str(e.http_status))
        for e in errors.catalogue()
    }
    assert _docs_table() == expected


def test_spec_codes_are_fixed() -> None:
    fixed = {
        "CV001": "AUDIT_QUARANTINE",
        "CV002": "IDEMPOTENCY_CONFLICT",
        "CV003": "EVENT_TIME_SKEW",
        "CV004": "INVALID_ARGUMENT",
        "CV005": "NOT_AUTHORIZED",
        "CV010": "INSUFFICIENT_BALANCE",
        "CV011": "BUDGET_OVERSPEND",
        "CV012": "RECEIVABLE_BOUND_EXCEEDED",
        "CV013": "INVALID_TRANSITION",
        "CV014": "RESERVATION_UNKNOWN",
        "CV015": "RESERVATION_EXPIRED",
        "CV016": "BPS_SUM_INVALID",
        "CV017": "ACCOUNT_UNKNOWN",
    }
    catalogue = {c.code: c.name for c in errors.catalogue()}
    assert {code: catalogue[code] for code in fixed} == fixed
    assert all(code > "CV017" for code in set(catalogue) - set(fixed)), "new codes come after"


# ------------------------------------------------------- retries on 40001/40P01


def _connector(url: str) -> Connector:
    settings = load_settings(
        {
            "COVENANT_RETRY_BASE_DELAY_MS": "1",
            "COVENANT_POOL_MIN_SIZE": "1",
            "COVENANT_POOL_MAX_SIZE": "2",
        }
    )
    return Connector(settings, database_url=url).open()


@pytest.mark.parametrize(
    ("sqlstate", "cls"),
    [("40001", errors.SerializationFailure), ("40P01", errors.DeadlockDetected)],
)
def test_transient_errors_are_retried_then_surface_typed(
    module_db_url: str, sqlstate: str, cls: type[errors.CovenantError]
) -> None:
    calls = 0

    def always_fails(c: psycopg.Connection[dict[str, object]]) -> None:
        nonlocal calls
        calls += 1
        c.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'transient' USING ERRCODE = '{sqlstate}'; END $$".encode()
        )

    with _connector(module_db_url) as db:
        with pytest.raises(cls) as exc:
            db.run(always_fails)
        assert exc.value.retryable
        assert calls == 3
        assert db.stats.retries == 2
        assert db.stats.exhausted == 1


def test_a_real_serialization_failure_is_retried_and_succeeds(module_db_url: str) -> None:
    """Two SERIALIZABLE transactions with a write skew: the loser is retried."""
    with psycopg.connect(module_db_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS public.skew_probe (k int PRIMARY KEY, v int)")
        setup.execute("TRUNCATE public.skew_probe")
        setup.execute("INSERT INTO public.skew_probe VALUES (1, 0), (2, 0)")
    attempts = 0
    with psycopg.connect(module_db_url) as other, _connector(module_db_url) as db:

        def work(c: psycopg.Connection[dict[str, object]]) -> int:
            nonlocal attempts
            attempts += 1
            c.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            c.execute("SELECT sum(v) FROM public.skew_probe")
            if attempts == 1:
                # a concurrent transaction reads what we write and writes what we read
                other.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                other.execute("SELECT sum(v) FROM public.skew_probe")
                other.execute("UPDATE public.skew_probe SET v = v + 1 WHERE k = 2")
                other.commit()
            c.execute("UPDATE public.skew_probe SET v = v + 1 WHERE k = 1")
            return attempts

        assert db.run(work) == 2
        assert db.stats.retries == 1
        assert db.stats.exhausted == 0
    with psycopg.connect(module_db_url, autocommit=True) as check:
        assert check.execute("SELECT sum(v) FROM public.skew_probe").fetchone() == (2,)
        check.execute("DROP TABLE public.skew_probe")


def test_errors_md_exists_and_names_every_code() -> None:
    text = Path(ROOT / "docs" / "errors.md").read_text()
    for code in errors.catalogue():
        assert code.code in text and code.name in text

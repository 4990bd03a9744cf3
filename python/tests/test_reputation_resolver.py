"""Reputation resolution (docs/reputation.md): one test per rule, on a real database.

Time is a fake clock the tests move by hand; background refreshes go to a
manual executor the tests drain, so every interleaving is chosen, not
waited for. The database reads are the real ones (``read_state``), counted,
and "database down" is the error a dead server raises. Only the listener
tests use threads; they wait on events with a bound, never on sleeps.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import psycopg
import pytest
from conftest import Server

from covenant.catalogue import ReputationState
from covenant.db import Connector
from covenant.errors import InvalidArgument
from covenant.ledger import Ledger
from covenant.reputation import (
    JwtHint,
    ReputationListener,
    ReputationResolver,
    agent_ref,
    database_unavailable,
    read_state,
)

SVC = "service:router"
WAIT_S = 10.0  # upper bound of every wait on another thread or the server
COLD, WARMING, ESTABLISHED, AUTHORITATIVE = (
    ReputationState.COLD,
    ReputationState.WARMING,
    ReputationState.ESTABLISHED,
    ReputationState.AUTHORITATIVE,
)


class FakeClock:
    """A monotonic and a wall clock that move only when told to."""

    def __init__(self) -> None:
        self.mono = 1_000.0
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class ManualExecutor:
    """Keeps submitted jobs until the test runs them."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def submit(self, fn: Callable[[], None], /) -> None:
        self.jobs.append(fn)

    def run_all(self) -> int:
        ran = 0
        while self.jobs:
            self.jobs.pop(0)()
            ran += 1
        return ran


class CountingFetch:
    """The real read, counted. ``down`` raises what an unreachable server raises;
    ``after_read`` runs once between a read and its return (to inject a race)."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.calls = 0
        self.down = False
        self.error: Exception | None = None
        self.after_read: Callable[[], None] | None = None

    def __call__(self, agent: uuid.UUID) -> ReputationState:
        self.calls += 1
        if self.down:
            raise psycopg.OperationalError("connection refused (simulated)")
        if self.error is not None:
            raise self.error
        state = read_state(self.connector, agent)
        hook, self.after_read = self.after_read, None
        if hook is not None:
            hook()
        return state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def executor() -> ManualExecutor:
    return ManualExecutor()


@pytest.fixture
def fetch(connector: Connector) -> CountingFetch:
    return CountingFetch(connector)


@pytest.fixture
def resolver(
    fetch: CountingFetch, clock: FakeClock, executor: ManualExecutor
) -> Iterator[ReputationResolver]:
    r = ReputationResolver(
        fetch=fetch, clock=clock.monotonic, wall_clock=clock.time, executor=executor
    )
    r.push_connected()  # as the listener does once it LISTENs
    # Past the hint block a (re)connection imposes: tests start in steady state.
    clock.advance(200)
    yield r
    r.close()


def new_agent(ledger: Ledger) -> uuid.UUID:
    return ledger.create_account(uuid.uuid4(), "agent", actor_id=SVC)


def warm(ledger: Ledger, agent: uuid.UUID) -> None:
    """cold -> warming: four perfect observations (score 5904, see test_ledger)."""
    for _ in range(4):
        out = ledger.record_reputation_event(agent, "quality_signal", 10_000, actor_id=SVC)
    assert out.state == WARMING


def warm_agent(ledger: Ledger) -> uuid.UUID:
    agent = new_agent(ledger)
    warm(ledger, agent)
    return agent


def downgrade(ledger: Ledger, agent: uuid.UUID) -> None:
    out = ledger.record_reputation_event(agent, "task_completed", 0, actor_id=SVC)
    assert out.downgraded and out.state == COLD


def hint(clock: FakeClock, state: ReputationState, age_s: float) -> JwtHint:
    return JwtHint(state, clock.wall - age_s)


# -- the database is the authority --------------------------------------------


def test_unknown_agents_and_non_agents_are_cold(
    resolver: ReputationResolver, fetch: CountingFetch, ledger: Ledger
) -> None:
    user = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC)
    for agent in (uuid.uuid4(), user):
        got = resolver.resolve(str(agent))
        assert (got.agent_id, got.state, got.source, got.age_s) == (agent, COLD, "database", 0.0)
    assert fetch.calls == 2
    assert resolver.state_of(user) == "cold" and fetch.calls == 2  # cached
    with pytest.raises(InvalidArgument):
        resolver.resolve("not-a-uuid")


def test_fresh_cache_is_served_without_a_query(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = warm_agent(ledger)
    assert resolver.resolve(agent).source == "database"
    clock.advance(59.9)
    got = resolver.resolve(agent)
    assert (got.state, got.source) == (WARMING, "cache")
    assert got.age_s == pytest.approx(59.9)
    assert fetch.calls == 1 and executor.jobs == []
    assert resolver.stats.cache_hits == 1


def test_stale_cache_is_served_while_one_refresh_runs(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = new_agent(ledger)
    assert resolver.state_of(agent) == COLD
    warm(ledger, agent)  # the database moves on; nothing is pushed here
    clock.advance(61)
    first = resolver.resolve(agent)
    clock.advance(30)
    second = resolver.resolve(agent)
    assert [(r.state, r.source) for r in (first, second)] == [(COLD, "stale-cache")] * 2
    assert second.age_s == pytest.approx(91)
    assert len(executor.jobs) == 1  # single-flight: one refresh per agent
    assert fetch.calls == 1  # the requests themselves did not query
    assert executor.run_all() == 1 and fetch.calls == 2
    got = resolver.resolve(agent)
    assert (got.state, got.source) == (WARMING, "cache")
    assert got.age_s == pytest.approx(30)  # counted from when the refresh was claimed
    assert resolver.stats.refreshes_scheduled == 1


def test_beyond_120s_the_database_is_read_synchronously(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    clock.advance(120)
    got = resolver.resolve(agent)
    assert (got.state, got.source, got.age_s) == (WARMING, "database", 0.0)
    assert fetch.calls == 2 and executor.jobs == []


# -- the database does not answer -----------------------------------------------


def test_database_down_and_cache_beyond_120s_is_cold(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock, ledger: Ledger
) -> None:
    agent = warm_agent(ledger)
    assert resolver.state_of(agent) == WARMING
    fetch.down = True
    clock.advance(121)
    got = resolver.resolve(agent)
    assert (got.state, got.source, got.age_s) == (COLD, "fallback-cold", None)
    never_seen = resolver.resolve(uuid.uuid4())
    assert (never_seen.state, never_seen.source) == (COLD, "fallback-cold")
    assert resolver.stats.fallbacks == 2


def test_database_down_with_a_servable_cache_serves_it(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    fetch.down = True
    clock.advance(30)
    assert resolver.resolve(agent).source == "cache"
    assert fetch.calls == 1  # a fresh entry never asks the database
    clock.advance(60)  # age 90: stale, and the refresh fails
    assert resolver.resolve(agent).source == "stale-cache"
    executor.run_all()  # the failure stays on the executor: no exception here
    assert resolver.stats.refreshes_failed == 1
    clock.advance(5)
    got = resolver.resolve(agent)
    assert (got.state, got.source) == (WARMING, "stale-cache")
    assert len(executor.jobs) == 1  # the failed refresh released its claim
    clock.advance(25)  # age 120
    assert resolver.resolve(agent).source == "fallback-cold"


def test_a_stopped_pool_is_a_database_that_does_not_answer(
    module_db_url: str, ledger: Ledger, executor: ManualExecutor
) -> None:
    agent = warm_agent(ledger)
    db = Connector(database_url=module_db_url).open()
    resolver = ReputationResolver(db, executor=executor)
    assert resolver.resolve(agent).state == WARMING
    resolver.invalidate(agent)
    db.close()
    got = resolver.resolve(agent)
    assert (got.state, got.source) == (COLD, "fallback-cold")
    with pytest.raises(psycopg.OperationalError) as caught:
        read_state(db, agent)
    assert database_unavailable(caught.value)


def test_other_database_errors_are_raised_not_turned_into_cold(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    fetch.error = psycopg.errors.InsufficientPrivilege("permission denied (simulated)")
    assert not database_unavailable(fetch.error)
    clock.advance(61)
    assert resolver.resolve(agent).source == "stale-cache"
    executor.run_all()  # logged on the executor, never raised into it
    assert resolver.stats.refreshes_failed == 1
    clock.advance(60)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        resolver.resolve(agent)
    assert resolver.stats.fallbacks == 0


# -- JWT hints ------------------------------------------------------------------


def test_jwt_older_than_300s_is_ignored_when_the_database_answers(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock, ledger: Ledger
) -> None:
    agent = new_agent(ledger)
    got = resolver.resolve(agent, hint=hint(clock, AUTHORITATIVE, 301))
    assert (got.state, got.source) == (COLD, "database")
    assert fetch.calls == 1
    # Stricter than 300 s: a hint past the stale limit is never served either.
    resolver.invalidate(agent)
    clock.advance(200)  # past the hint block of the invalidation
    got = resolver.resolve(agent, hint=hint(clock, AUTHORITATIVE, 120))
    assert (got.state, got.source) == (COLD, "database")


def test_fresh_jwt_hint_seeds_the_cache_until_the_database_answers(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = new_agent(ledger)  # cold in the database
    got = resolver.resolve(agent, hint=hint(clock, WARMING, 10))
    assert (got.state, got.source, got.age_s) == (WARMING, "jwt", 10)
    assert fetch.calls == 0 and executor.jobs == []
    # The hint is a cache entry read at its iat: same TTL, same stale window.
    assert resolver.resolve(agent).source == "cache"
    clock.advance(51)  # the hint's age is 61
    assert resolver.resolve(agent).source == "stale-cache"
    executor.run_all()
    got = resolver.resolve(agent)
    assert (got.state, got.source) == (COLD, "cache")  # the authority replaced the hint


def test_jwt_hint_between_60_and_120s_is_served_with_a_refresh(
    resolver: ReputationResolver, clock: FakeClock, executor: ManualExecutor, ledger: Ledger
) -> None:
    agent = warm_agent(ledger)
    got = resolver.resolve(agent, hint=hint(clock, WARMING, 90))
    assert (got.state, got.source) == (WARMING, "jwt")
    assert len(executor.jobs) == 1


def test_jwt_hint_never_overrides_a_database_answer(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock, ledger: Ledger
) -> None:
    agent = new_agent(ledger)
    resolver.resolve(agent)
    clock.advance(100)  # stale but servable
    got = resolver.resolve(agent, hint=hint(clock, AUTHORITATIVE, 1))
    assert (got.state, got.source) == (COLD, "stale-cache")
    assert fetch.calls == 1


def test_jwt_hint_is_refused_after_a_pushed_change_and_while_pushes_are_down(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock, ledger: Ledger
) -> None:
    agent = new_agent(ledger)
    resolver.handle_notification(
        json.dumps(
            {"agent_id": str(agent), "from": "warming", "to": "cold", "direction": "downgrade"}
        )
    )
    # A token minted before the downgrade would otherwise bring back the
    # higher state the push just removed.
    got = resolver.resolve(agent, hint=hint(clock, WARMING, 5))
    assert (got.state, got.source) == (COLD, "database")
    other = new_agent(ledger)
    resolver.push_lost()
    got = resolver.resolve(other, hint=hint(clock, WARMING, 5))
    assert (got.state, got.source) == (COLD, "database")
    fetch.down = True
    third = new_agent(ledger)
    got = resolver.resolve(third, hint=hint(clock, WARMING, 5))
    assert (got.state, got.source) == (COLD, "fallback-cold")  # neither answers


def test_a_wall_clock_stepped_back_does_not_reopen_the_hint_block(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock, ledger: Ledger
) -> None:
    agent = new_agent(ledger)  # cold in the database
    minted = clock.wall - 10  # a token claiming warming, minted before the downgrade
    resolver.invalidate(agent, reason="downgrade")
    clock.mono += 126  # the monotonic hint block is over...
    clock.wall += 26  # ...but NTP stepped the wall clock back 100 s: the token looks 36 s old
    got = resolver.resolve(agent, hint=JwtHint(WARMING, minted))
    assert (got.state, got.source) == (COLD, "database")
    # The same after a (re)connection of the listener, for every agent.
    other = new_agent(ledger)
    resolver.push_connected()
    minted = clock.wall - 10
    clock.mono += 126
    clock.wall += 26
    got = resolver.resolve(other, hint=JwtHint(WARMING, minted))
    assert (got.state, got.source) == (COLD, "database")
    assert fetch.calls == 2


def test_a_hint_naming_another_agent_is_not_used(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock
) -> None:
    fetch.down = True  # so that only the hint could answer
    agent, other = uuid.uuid4(), uuid.uuid4()
    foreign = JwtHint(WARMING, clock.wall - 5, str(other))
    got = resolver.resolve(agent, hint=foreign)
    assert (got.state, got.source) == (COLD, "fallback-cold")
    own = JwtHint(WARMING, clock.wall - 5, str(agent).upper())  # uuid text in any case
    got = resolver.resolve(agent, hint=own)
    assert (got.state, got.source) == (WARMING, "jwt")


def test_database_down_with_a_fresh_jwt_serves_it_and_a_stale_one_is_cold(
    resolver: ReputationResolver, fetch: CountingFetch, clock: FakeClock
) -> None:
    fetch.down = True
    got = resolver.resolve(uuid.uuid4(), hint=hint(clock, WARMING, 20))
    assert (got.state, got.source) == (WARMING, "jwt")
    got = resolver.resolve(uuid.uuid4(), hint=hint(clock, WARMING, 121))
    assert (got.state, got.source) == (COLD, "fallback-cold")
    got = resolver.resolve(uuid.uuid4(), hint=hint(clock, WARMING, -60))  # iat in the future
    assert (got.state, got.source) == (COLD, "fallback-cold")
    assert fetch.calls == 2


def test_jwt_claims_are_parsed_strictly(caplog: pytest.LogCaptureFixture) -> None:
    assert JwtHint.from_claims({"reputation_state": "warming", "iat": 1_700_000_000}) == JwtHint(
        WARMING, 1_700_000_000.0
    )
    assert JwtHint.from_claims({"sub": "x", "iat": 1}) is None
    assert JwtHint.from_claims(
        {"reputation_state": "warming", "iat": 1, "sub": "00000000-0000-0000-0000-000000000001"}
    ) == JwtHint(WARMING, 1.0, "00000000-0000-0000-0000-000000000001")
    with caplog.at_level(logging.WARNING, logger="covenant.reputation"):
        for claims in (
            {"reputation_state": "godlike", "iat": 1},
            {"reputation_state": "warming"},
            {"reputation_state": "warming", "iat": True},
            {"reputation_state": "warming", "iat": "1700000000"},
            {"reputation_state": "warming", "iat": float("nan")},
            {"reputation_state": "warming", "iat": 10**400},  # JSON ints are unbounded
            {"reputation_state": "warming", "iat": 1, "sub": 42},
        ):
            assert JwtHint.from_claims(claims) is None
    assert len(caplog.records) == 7


# -- pushes: invalidation, the race, the listener --------------------------------


def test_downgrade_is_pushed_and_the_next_request_gets_the_lower_state(
    connector: Connector, module_db_url: str, ledger: Ledger, clock: FakeClock
) -> None:
    agent = warm_agent(ledger)
    fetch = CountingFetch(connector)
    resolver = ReputationResolver(
        fetch=fetch, clock=clock.monotonic, wall_clock=clock.time, executor=ManualExecutor()
    )
    seen = threading.Event()
    handle = resolver.handle_notification

    def spy(payload: str) -> bool:
        applied = handle(payload)
        if json.loads(payload).get("agent_id") == str(agent):
            seen.set()
        return applied

    resolver.handle_notification = spy  # type: ignore[method-assign]
    with ReputationListener(resolver, module_db_url, poll_s=0.1) as listener:
        assert listener.wait_until_listening(WAIT_S)
        assert resolver.push_live
        assert resolver.resolve(agent).source == "database"
        assert resolver.resolve(agent, hint=hint(clock, WARMING, 1)).source == "cache"
        downgrade(ledger, agent)
        assert seen.wait(WAIT_S), "the downgrade notification did not arrive"
        # The clock has not moved: only the push can have removed the entry.
        got = resolver.resolve(agent, hint=hint(clock, WARMING, 1))
        assert (got.state, got.source) == (COLD, "database")
    assert fetch.calls == 2
    assert resolver.stats.invalidations == 1


def test_a_refresh_that_read_before_a_downgrade_does_not_store_it(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
    module_db_url: str,
) -> None:
    agent = warm_agent(ledger)
    with psycopg.connect(module_db_url, autocommit=True) as listen:
        listen.execute("LISTEN covenant_reputation")

        def downgrade_pushed() -> None:
            downgrade(ledger, agent)
            notes = list(listen.notifies(timeout=WAIT_S, stop_after=1))
            assert [json.loads(n.payload)["direction"] for n in notes] == ["downgrade"]
            assert resolver.handle_notification(notes[0].payload)

        assert resolver.resolve(agent).state == WARMING
        clock.advance(70)
        assert resolver.resolve(agent).source == "stale-cache"
        # The refresh reads "warming"; the downgrade is committed and pushed
        # before the refresh stores: its late answer must be dropped.
        fetch.after_read = downgrade_pushed
        assert executor.run_all() == 1
        assert resolver.stats.stores_dropped == 1
        got = resolver.resolve(agent)
        assert (got.state, got.source) == (COLD, "database")
        assert fetch.calls == 3

        # The same race on a synchronous read: it reads again.
        other = warm_agent(ledger)
        list(listen.notifies(timeout=WAIT_S, stop_after=1))  # other's upgrade

        def other_downgrade_pushed() -> None:
            downgrade(ledger, other)
            notes = list(listen.notifies(timeout=WAIT_S, stop_after=1))
            assert json.loads(notes[0].payload)["agent_id"] == str(other)
            assert resolver.handle_notification(notes[0].payload)

        fetch.after_read = other_downgrade_pushed
        got = resolver.resolve(other)
        assert (got.state, got.source) == (COLD, "database")
        assert resolver.stats.stores_dropped == 2
        assert resolver.resolve(other).source == "cache"


def test_malformed_notifications_are_ignored(
    resolver: ReputationResolver, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    bad = ["", "not json", "null", "[]", "{}", '{"agent_id": 5}', '{"agent_id": "nope"}']
    with caplog.at_level(logging.INFO, logger="covenant.reputation"):
        assert [resolver.handle_notification(p) for p in bad] == [False] * len(bad)
        assert resolver.resolve(agent).source == "cache"
        assert resolver.stats.notifications_ignored == len(bad)
        # A readable agent with odd fields still invalidates: fail-closed.
        assert resolver.handle_notification(json.dumps({"agent_id": str(agent), "direction": "?"}))
        assert resolver.resolve(agent).source == "database"
    events = [getattr(r, "covenant_event", None) for r in caplog.records]
    assert events.count("reputation.notification_malformed") == len(bad)
    assert "reputation.invalidated" in events
    assert str(agent) not in caplog.text and agent_ref(agent) in caplog.text


def test_deeply_nested_notifications_are_ignored_not_raised(
    resolver: ReputationResolver, ledger: Ledger
) -> None:
    # Any role may pg_notify the channel (8000 bytes); json.loads of deep
    # nesting raises RecursionError, which would kill the listener's session.
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    for payload in ("[" * 7_999, '{"agent_id": ' + "[" * 3_000 + "]" * 3_000 + "}"):
        assert resolver.handle_notification(payload) is False
    assert resolver.stats.notifications_ignored == 2
    assert resolver.resolve(agent).source == "cache"


def test_invalidation_pushed_to_the_listener_thread_survives_garbage(
    resolver: ReputationResolver, module_db_url: str, ledger: Ledger
) -> None:
    agent = warm_agent(ledger)
    done = threading.Event()
    handle = resolver.handle_notification

    def spy(payload: str) -> bool:
        applied = handle(payload)
        if applied:
            done.set()
        return applied

    resolver.handle_notification = spy  # type: ignore[method-assign]
    with ReputationListener(resolver, module_db_url, poll_s=0.1) as listener:
        assert listener.wait_until_listening(WAIT_S)
        resolver.resolve(agent)
        with psycopg.connect(module_db_url, autocommit=True) as c:
            c.execute("SELECT pg_notify('covenant_reputation', 'garbage')")
            c.execute(
                "SELECT pg_notify('covenant_reputation', %s)",
                [json.dumps({"agent_id": str(agent), "direction": "downgrade"})],
            )
        assert done.wait(WAIT_S)
        assert listener.listening and listener.sessions == 1  # the garbage did not kill it
    assert resolver.stats.notifications_ignored == 1
    assert resolver.resolve(agent).source == "database"


def test_while_pushes_are_down_only_the_ttl_holds(
    resolver: ReputationResolver,
    fetch: CountingFetch,
    clock: FakeClock,
    executor: ManualExecutor,
    ledger: Ledger,
) -> None:
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    resolver.push_lost()
    clock.advance(30)
    assert resolver.resolve(agent).source == "cache"
    clock.advance(40)  # age 70: no stale window without pushes
    assert resolver.resolve(agent).source == "database"
    assert executor.jobs == [] and fetch.calls == 2
    resolver.push_connected()  # changes may have been missed: everything goes
    assert resolver.resolve(agent).source == "database"


def test_listener_reconnects_and_drops_the_cache(
    server: Server, resolver: ReputationResolver, module_db_url: str, ledger: Ledger
) -> None:
    agent = warm_agent(ledger)
    lost = threading.Event()
    live_after_loss: list[bool] = []
    push_lost = resolver.push_lost

    def spy(*, closing: bool = False) -> None:
        push_lost(closing=closing)
        live_after_loss.append(resolver.push_live)
        lost.set()

    resolver.push_lost = spy  # type: ignore[method-assign]
    listener = ReputationListener(resolver, module_db_url, poll_s=0.1, reconnect_delay_s=0.05)
    with listener:
        assert listener.wait_until_listening(WAIT_S)
        resolver.resolve(agent)
        assert resolver.resolve(agent).source == "cache"
        dbname = psycopg.conninfo.conninfo_to_dict(module_db_url)["dbname"]
        with server.admin() as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'covenant-reputation-listener' AND datname = %s",
                [dbname],
            ).fetchone()
        assert killed == (1,)
        assert lost.wait(WAIT_S)
        assert live_after_loss[0] is False
        assert listener.wait_until_listening(WAIT_S, sessions=2)
        assert resolver.push_live
        assert resolver.resolve(agent).source == "database"


def test_listener_close_is_clean(
    server: Server, resolver: ReputationResolver, module_db_url: str
) -> None:
    never_started = ReputationListener(resolver, module_db_url)
    never_started.close()  # nothing to stop
    with pytest.raises(RuntimeError):
        never_started.start()  # closed is final
    listener = ReputationListener(resolver, module_db_url, poll_s=0.1)
    listener.start()
    assert listener.wait_until_listening(WAIT_S)
    thread = listener._thread
    assert thread is not None and thread.daemon
    listener.close()
    listener.close()  # twice: still fine
    assert not thread.is_alive()
    assert not listener.listening and not resolver.push_live
    dbname = psycopg.conninfo.conninfo_to_dict(module_db_url)["dbname"]
    gone = threading.Event()
    with server.admin() as admin:
        for _ in range(100):  # the server notices the closed socket shortly
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'covenant-reputation-listener' AND datname = %s",
                [dbname],
            ).fetchone()
            if row == (0,):
                break
            gone.wait(0.05)
        assert row == (0,)
    with pytest.raises(RuntimeError):
        listener.start()


# -- deployment shape -------------------------------------------------------------


def test_works_as_the_app_role_with_the_default_executor(
    server: Server, module_db_url: str, ledger: Ledger
) -> None:
    agent = warm_agent(ledger)
    role = f"cv_rep_{uuid.uuid4().hex[:8]}"
    with server.admin() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-pw' IN ROLE covenant_app".encode())
    try:
        url = psycopg.conninfo.make_conninfo(module_db_url, user=role, password="app-pw")
        clock = FakeClock()
        with Connector(database_url=url) as db:
            resolver = ReputationResolver(db, clock=clock.monotonic, wall_clock=clock.time)
            with ReputationListener(resolver, url, poll_s=0.1) as listener:
                assert listener.wait_until_listening(WAIT_S)
                assert resolver.resolve(agent).state == WARMING
            resolver.close()  # the private pool is gone: a refresh cannot be scheduled
            resolver.push_connected()
            resolver.resolve(agent)
            clock.advance(61)
            assert resolver.resolve(agent).source == "stale-cache"
            assert resolver.stats.refreshes_failed == 1
            clock.advance(1)
            assert resolver.resolve(agent).source == "stale-cache"
            assert resolver.stats.refreshes_scheduled == 2  # the claim was released
    finally:
        with server.admin() as admin:
            admin.execute(f"DROP ROLE {role}".encode())


def test_a_cancelled_refresh_releases_its_claim(
    resolver: ReputationResolver, clock: FakeClock, ledger: Ledger
) -> None:
    # An executor that may cancel queued work (shutdown(cancel_futures=True)):
    # a cancelled job never runs, so its claim must not stay held forever.
    futures: list[Future[None]] = []

    class QueueingExecutor:
        def submit(self, fn: Callable[[], None], /) -> Future[None]:
            futures.append(Future())
            return futures[-1]

    resolver._executor = QueueingExecutor()
    agent = warm_agent(ledger)
    resolver.resolve(agent)
    clock.advance(61)
    assert resolver.resolve(agent).source == "stale-cache"
    assert len(futures) == 1
    assert futures[0].cancel()
    assert resolver.stats.refreshes_failed == 1
    clock.advance(1)
    assert resolver.resolve(agent).source == "stale-cache"
    assert len(futures) == 2  # a new refresh could be claimed
    assert resolver.stats.refreshes_scheduled == 2


def test_the_cache_is_bounded(resolver: ReputationResolver, fetch: CountingFetch) -> None:
    resolver.max_entries = 2
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for agent in (a, b, c):
        resolver.resolve(agent)
    assert resolver.resolve(c).source == "cache"
    assert resolver.resolve(a).source == "database"  # the oldest went first
    assert fetch.calls == 4

"""Reputation resolution, fail-closed (docs/reputation.md).

The database (``covenant.agent_reputation.state``) is the authority: an
agent without a row, or an account that is not an agent, is ``cold``. This
module keeps a per-process cache in front of it and answers "which state may
this agent use now?" on every request:

* a cached value younger than the TTL (60 s) is served without a query;
* between the TTL and the stale limit (120 s) it is served while one
  background refresh per agent re-reads the database (single-flight);
* older, or absent: the database is read synchronously;
* the database not answering (connection refused, pool exhausted or
  closed, statement timeout, server shutdown) with nothing servable cached:
  ``cold``. Any other database error is raised: it is a bug, not an outage.

A JWT claim is only a cache hint (:class:`JwtHint`): it is treated exactly as
a cache entry read from the authority at its ``iat``, so it is served only
while that age is within the same windows, only when nothing servable is
cached, never after a state change of that agent was pushed, and never
while pushes are not being received.

State changes are pushed: ``record_reputation_event`` NOTIFYs channel
``covenant_reputation`` at commit, and :class:`ReputationListener` feeds each
payload to :meth:`ReputationResolver.handle_notification`, which drops the
agent's entry at once. Every invalidation bumps a sequence number; a read
that started before it may not store its (possibly higher, older) answer
afterwards. While the listener is disconnected the stale window and JWT
hints are switched off; on (re)connection the whole cache is dropped,
because notifications may have been missed.

Logs (logger ``covenant.reputation``) carry no personal data: agents appear
as the first 12 hex digits of the SHA-256 of their id, errors by class name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import psycopg

from covenant.catalogue import ReputationState
from covenant.db import Conn, Connector
from covenant.errors import CovenantError, InvalidArgument
from covenant.telemetry import hash_identity

log = logging.getLogger("covenant.reputation")

CHANNEL: Final = "covenant_reputation"
TTL_S: Final = 60.0
STALE_S: Final = 120.0
# SPEC §5: a JWT older than this is ignored when the database answers. The
# hint rules below are stricter (a hint is never served past STALE_S); this
# bound still caps the hint window if STALE_S is configured above it.
JWT_MAX_AGE_S: Final = 300.0
# How far in the future an ``iat`` may be (clock skew between the token
# issuer and this host) before the hint is refused outright.
CLOCK_SKEW_S: Final = 5.0
READ_TIMEOUT_MS: Final = 2000

Source = Literal["cache", "stale-cache", "database", "jwt", "fallback-cold"]
Fetch = Callable[[uuid.UUID], ReputationState]


class Executor(Protocol):
    """Where background refreshes run (a ``concurrent.futures.Executor`` fits)."""

    def submit(self, fn: Callable[[], None], /) -> object: ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """One answer: the state to use, where it came from, and how old it is.

    ``age_s`` is the age of the value served: 0 for a database answer, the
    cache entry's age for ``cache``/``stale-cache``, ``now - iat`` for
    ``jwt``, and ``None`` for ``fallback-cold`` (nothing was known).
    """

    agent_id: uuid.UUID
    state: ReputationState
    source: Source
    age_s: float | None


@dataclass(frozen=True, slots=True)
class JwtHint:
    """A reputation state claimed by an already verified JWT, with its ``iat``.

    Verifying the token is the caller's job; this is only the claim.
    ``subject`` is the token's ``sub``: when set, the hint is used only for
    the agent whose id it names (a token of agent A never seeds B's entry).
    """

    state: ReputationState
    issued_at: float  # ``iat``: seconds since the epoch (wall clock)
    subject: str | None = None

    @classmethod
    def from_claims(
        cls, claims: Mapping[str, Any], *, claim: str = "reputation_state"
    ) -> JwtHint | None:
        """The hint carried by ``claims``, or ``None`` if absent or malformed.

        A malformed hint (unknown state, ``iat`` missing or not a finite
        number) is logged and ignored: a hint can only ever save a query.
        """
        raw_state = claims.get(claim)
        if raw_state is None:
            return None
        iat = claims.get("iat")
        try:
            state = ReputationState(raw_state)
        except ValueError:
            _malformed_hint("unknown state")
            return None
        issued_at = math.nan
        if isinstance(iat, int | float) and not isinstance(iat, bool):
            with contextlib.suppress(OverflowError):  # an int beyond any float: not a time
                issued_at = float(iat)
        if not math.isfinite(issued_at):
            _malformed_hint("iat missing or not a finite number")
            return None
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            _malformed_hint("sub is not a string")
            return None
        return cls(state, issued_at, subject)


def _malformed_hint(reason: str) -> None:
    _emit(logging.WARNING, "reputation.hint_malformed", "JWT hint ignored", reason=reason)


def _emit(
    level: int, event: str, message: str, agent: uuid.UUID | None = None, **fields: str
) -> None:
    """One structured log line: ``message event=... agent=... key=value``, same in ``extra``."""
    if not log.isEnabledFor(level):
        return
    data = {"covenant_event": event}
    if agent is not None:
        data["agent"] = agent_ref(agent)
    data.update(fields)
    text = " ".join(f"{k.removeprefix('covenant_')}={v}" for k, v in data.items())
    log.log(level, "reputation: %s (%s)", message, text, extra=data)


@dataclass
class ResolverStats:
    """Counters of what the resolver did (for metrics and tests)."""

    cache_hits: int = 0
    stale_hits: int = 0
    hint_hits: int = 0
    database_reads: int = 0
    fallbacks: int = 0
    refreshes_scheduled: int = 0
    refreshes_failed: int = 0
    stores_dropped: int = 0
    invalidations: int = 0
    notifications_ignored: int = 0


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database did not answer (as opposed to a bug).

    Connection failures, a closed or exhausted pool (``PoolClosed`` and
    ``PoolTimeout`` are ``OperationalError``), a statement timeout
    (``QueryCanceled``), a server shutting down, a closed connection
    (``InterfaceError``), and transient errors still failing after the
    connector's retries.
    """
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(exc, CovenantError) and exc.retryable


def read_state(
    connector: Connector,
    agent_id: uuid.UUID,
    *,
    timeout_ms: int = READ_TIMEOUT_MS,
    conn: Conn | None = None,
) -> ReputationState:
    """The authoritative state of ``agent_id``: ``cold`` when it has no row.

    In a transaction of its own the read is bounded by a transaction-local
    ``statement_timeout`` (PgBouncer-safe); in the caller's (``conn=``) it
    is not, as that transaction's settings are the caller's.
    """

    def work(c: Conn) -> ReputationState:
        if conn is None:
            c.execute(
                "SELECT pg_catalog.set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"]
            )
        row = c.execute(
            "SELECT state FROM covenant.agent_reputation WHERE agent_id = %s", [agent_id]
        ).fetchone()
        return ReputationState.COLD if row is None else ReputationState(row["state"])

    return connector.run(work, conn=conn)


def agent_ref(agent_id: uuid.UUID) -> str:
    """How logs name an agent: hashed as spans hash identities (12 hex digits of SHA-256)."""
    return hash_identity(agent_id)


def _as_agent_id(agent_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(agent_id, uuid.UUID):
        return agent_id
    try:
        return uuid.UUID(agent_id)
    except (TypeError, ValueError, AttributeError):
        raise InvalidArgument("agent_id must be a UUID") from None


@dataclass(frozen=True, slots=True)
class _Entry:
    state: ReputationState
    read_at: float  # monotonic time the authority was read (for a hint: its iat)
    origin: Literal["database", "jwt"]


@dataclass(frozen=True, slots=True)
class _Invalidation:
    seq: int
    hints_blocked_until: float  # monotonic
    hints_blocked_until_wall: float  # the same bound on the wall clock (it may step back)


def _blocks(inv: _Invalidation, now: float, wall: float) -> bool:
    """Whether ``inv`` still blocks JWT hints (on either clock)."""
    return now < inv.hints_blocked_until or wall < inv.hints_blocked_until_wall


class ReputationResolver:
    """Resolves an agent's reputation state: cache, then database, else ``cold``.

    ``fetch`` replaces the database read (default :func:`read_state` on
    ``connector``); ``clock`` is monotonic and measures cache ages,
    ``wall_clock`` is the epoch clock JWT ``iat`` values are compared with;
    ``executor`` runs background refreshes (default: a private thread pool,
    shut down by :meth:`close`). Thread-safe.

    Until :meth:`push_connected` is called (by :class:`ReputationListener`),
    the resolver assumes it may miss downgrades: no stale window, no hints.
    """

    def __init__(
        self,
        connector: Connector | None = None,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
        ttl_s: float = TTL_S,
        stale_s: float = STALE_S,
        read_timeout_ms: int = READ_TIMEOUT_MS,
        max_entries: int = 100_000,
    ) -> None:
        if fetch is None:
            if connector is None:
                raise ValueError("pass a connector or a fetch function")
            db = connector
            fetch = lambda agent: read_state(db, agent, timeout_ms=read_timeout_ms)  # noqa: E731
        if not (0 < ttl_s <= stale_s) or max_entries < 1:
            raise ValueError("need 0 < ttl_s <= stale_s and max_entries >= 1")
        self._fetch = fetch
        self._clock = clock
        self._wall = wall_clock
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self._own_executor: ThreadPoolExecutor | None = None
        if executor is None:
            self._own_executor = ThreadPoolExecutor(2, "covenant-reputation")
            executor = self._own_executor
        self._executor: Executor = executor
        self.stats = ResolverStats()
        self._lock = threading.Lock()
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._inflight: dict[uuid.UUID, int] = {}  # agent -> token of its refresh
        self._invalidations: dict[uuid.UUID, _Invalidation] = {}
        self._active: Counter[int] = Counter()  # tokens of reads under way
        self._seq = 0  # bumped by every invalidation
        self._epoch = 0  # reads with a token below this may not store
        self._push_live = False
        self._hints_blocked_until = -math.inf
        self._hints_blocked_until_wall = -math.inf
        self._prune_at = 4096

    # -- the request path ----------------------------------------------------

    def state_of(
        self, agent_id: uuid.UUID | str, *, hint: JwtHint | None = None
    ) -> ReputationState:
        """The state to use for ``agent_id`` now (see :meth:`resolve`)."""
        return self.resolve(agent_id, hint=hint).state

    def resolve(self, agent_id: uuid.UUID | str, *, hint: JwtHint | None = None) -> Resolution:
        """Resolve ``agent_id``'s state, fail-closed (docs/reputation.md has the table)."""
        agent = _as_agent_id(agent_id)
        now = self._clock()
        result: Resolution | None = None
        refresh: int | None = None
        with self._lock:
            window = self.stale_s if self._push_live else self.ttl_s
            entry = self._entries.get(agent)
            if entry is not None:
                age = now - entry.read_at
                if age < self.ttl_s:
                    result = Resolution(agent, entry.state, "cache", age)
                    self.stats.cache_hits += 1
                elif age < window:
                    result = Resolution(agent, entry.state, "stale-cache", age)
                    self.stats.stale_hits += 1
                    refresh = self._claim_refresh(agent)
            if result is None and hint is not None:
                result, refresh = self._use_hint(agent, hint, now, window)
        if refresh is not None:
            self._schedule_refresh(agent, refresh, now)
        if result is not None:
            return result
        return self._read_through(agent)

    def _use_hint(
        self, agent: uuid.UUID, hint: JwtHint, now: float, window: float
    ) -> tuple[Resolution | None, int | None]:
        """Serve ``hint`` as a cache entry read at its ``iat``, if allowed (lock held)."""
        reason = None
        wall = self._wall()
        age = wall - hint.issued_at
        inv = self._invalidations.get(agent)
        if hint.subject is not None and hint.subject.lower() != str(agent):
            reason = "the token names another agent"
        elif not self._push_live:
            reason = "push notifications not being received"
        elif (
            now < self._hints_blocked_until
            or wall < self._hints_blocked_until_wall
            or (inv is not None and _blocks(inv, now, wall))
        ):
            # Both clocks must have moved past the block: ages are measured on
            # the wall clock, and a step back would make a token minted before
            # the change look young again.
            reason = "state changed since the token may have been issued"
        elif age < -CLOCK_SKEW_S:
            reason = "iat in the future"
        elif age >= min(window, JWT_MAX_AGE_S):
            reason = "too old"
        if reason is not None:
            _emit(
                logging.DEBUG, "reputation.hint_unused", "JWT hint not used", agent, reason=reason
            )
            return None, None
        age = max(age, 0.0)
        self._put(agent, _Entry(hint.state, now - age, "jwt"))
        self.stats.hint_hits += 1
        refresh = self._claim_refresh(agent) if age >= self.ttl_s else None
        return Resolution(agent, hint.state, "jwt", age), refresh

    def _read_through(self, agent: uuid.UUID) -> Resolution:
        """Read the authority synchronously; ``cold`` if it does not answer."""
        for attempt in (1, 2):
            with self._lock:
                token = self._seq
                self._active[token] += 1
            started = self._clock()
            try:
                state = self._fetch(agent)
            except Exception as exc:
                with self._lock:
                    self._release(token)
                if not database_unavailable(exc):
                    _emit(
                        logging.ERROR,
                        "reputation.read_error",
                        "read failed",
                        agent,
                        error=type(exc).__name__,
                    )
                    raise
                with self._lock:
                    self.stats.fallbacks += 1
                _emit(
                    logging.WARNING,
                    "reputation.fallback_cold",
                    "database did not answer; failing closed to cold",
                    agent,
                    error=type(exc).__name__,
                )
                return Resolution(agent, ReputationState.COLD, "fallback-cold", None)
            with self._lock:
                self.stats.database_reads += 1
                stored = self._store(agent, state, token, started)
            # A state change pushed during the read: the value may predate
            # it, so read once more (the change is committed by now).
            if stored or attempt == 2:
                return Resolution(agent, state, "database", 0.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- background refresh ----------------------------------------------------

    def _claim_refresh(self, agent: uuid.UUID) -> int | None:
        """A token for the agent's one refresh, or None if one is under way (lock held)."""
        if agent in self._inflight:
            return None
        self._inflight[agent] = self._seq
        self._active[self._seq] += 1
        self.stats.refreshes_scheduled += 1
        return self._seq

    def _schedule_refresh(self, agent: uuid.UUID, token: int, claimed_at: float) -> None:
        try:
            future = self._executor.submit(lambda: self._refresh(agent, token, claimed_at))
        except Exception as exc:  # e.g. the executor was shut down
            self._abandon_refresh(agent, token, type(exc).__name__)
            return
        if isinstance(future, Future):
            # A cancelled job never runs (``shutdown(cancel_futures=True)``):
            # release its claim, or the agent would never be refreshed again.
            def on_done(f: Future[Any]) -> None:
                if f.cancelled():
                    self._abandon_refresh(agent, token, "cancelled")

            future.add_done_callback(on_done)

    def _abandon_refresh(self, agent: uuid.UUID, token: int, error: str) -> None:
        with self._lock:
            self._finish_refresh(agent, token)
            self.stats.refreshes_failed += 1
        _emit(logging.WARNING, "reputation.refresh_rejected", "refresh not run", agent, error=error)

    def _refresh(self, agent: uuid.UUID, token: int, claimed_at: float) -> None:
        """Runs on the executor; never raises. The age counts from the claim."""
        try:
            state = self._fetch(agent)
        except Exception as exc:
            with self._lock:
                self._finish_refresh(agent, token)
                self.stats.refreshes_failed += 1
            level = logging.WARNING if database_unavailable(exc) else logging.ERROR
            _emit(
                level,
                "reputation.refresh_failed",
                "background refresh failed",
                agent,
                error=type(exc).__name__,
            )
            return
        with self._lock:
            self.stats.database_reads += 1
            if self._inflight.get(agent) == token:
                del self._inflight[agent]
            self._store(agent, state, token, claimed_at)

    def _finish_refresh(self, agent: uuid.UUID, token: int) -> None:
        if self._inflight.get(agent) == token:
            del self._inflight[agent]
        self._release(token)

    # -- the cache (every method below runs with the lock held) ---------------

    def _release(self, token: int) -> None:
        self._active[token] -= 1
        if self._active[token] <= 0:
            del self._active[token]

    def _store(self, agent: uuid.UUID, state: ReputationState, token: int, read_at: float) -> bool:
        """Cache a database answer unless a state change was pushed since ``token``."""
        self._release(token)
        inv = self._invalidations.get(agent)
        if token < self._epoch or (inv is not None and inv.seq > token):
            self.stats.stores_dropped += 1
            _emit(
                logging.INFO,
                "reputation.store_dropped",
                "an answer read before a pushed change was not cached",
                agent,
            )
            return False
        current = self._entries.get(agent)
        if current is None or current.origin == "jwt" or current.read_at <= read_at:
            self._put(agent, _Entry(state, read_at, "database"))
        return True

    def _put(self, agent: uuid.UUID, entry: _Entry) -> None:
        self._entries.pop(agent, None)  # re-insert at the end: eviction is oldest-first
        self._entries[agent] = entry
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    # -- pushes ------------------------------------------------------------------

    @property
    def push_live(self) -> bool:
        """Whether state changes are being pushed to this resolver right now."""
        return self._push_live

    def push_connected(self) -> None:
        """Pushes flow again (the listener is LISTENing): drop everything cached.

        Changes made while nothing listened were not seen, so every entry,
        every read under way and, for the stale limit, every JWT hint is
        distrusted.
        """
        with self._lock:
            self._seq += 1
            self._epoch = self._seq
            self._entries.clear()
            self._hints_blocked_until = self._clock() + self._hint_block_s
            self._hints_blocked_until_wall = self._wall() + self._hint_block_s
            self._push_live = True
        _emit(logging.INFO, "reputation.push_up", "pushes connected; cache dropped")

    def push_lost(self, *, closing: bool = False) -> None:
        """Pushes stopped: serve entries only within the TTL, ignore hints.

        ``closing``: the listener was closed on purpose (logged at INFO, not WARNING).
        """
        with self._lock:
            was_live, self._push_live = self._push_live, False
        if was_live and closing:
            _emit(logging.INFO, "reputation.push_closed", "listener closed; pushes stopped")
        elif was_live:
            _emit(
                logging.WARNING,
                "reputation.push_down",
                "pushes lost; cache limited to the TTL, JWT hints ignored",
            )

    @property
    def _hint_block_s(self) -> float:
        # The longest a token minted before a change could still be usable.
        return min(self.stale_s, JWT_MAX_AGE_S) + CLOCK_SKEW_S

    def invalidate(self, agent_id: uuid.UUID | str, *, reason: str = "explicit") -> None:
        """Forget ``agent_id`` at once; reads started before now will not store."""
        agent = _as_agent_id(agent_id)
        with self._lock:
            now, wall = self._clock(), self._wall()
            self._seq += 1
            self._entries.pop(agent, None)
            self._invalidations[agent] = _Invalidation(
                self._seq, now + self._hint_block_s, wall + self._hint_block_s
            )
            self.stats.invalidations += 1
            if len(self._invalidations) > self._prune_at:
                self._prune(now, wall)
        _emit(logging.INFO, "reputation.invalidated", "cache invalidated", agent, reason=reason)

    def _prune(self, now: float, wall: float) -> None:
        """Forget invalidations no read under way and no usable hint can predate."""
        floor = min(self._active) if self._active else self._seq
        for agent, inv in list(self._invalidations.items()):
            if not _blocks(inv, now, wall) and inv.seq <= floor:
                del self._invalidations[agent]
        self._prune_at = max(4096, 2 * len(self._invalidations))

    def handle_notification(self, payload: str) -> bool:
        """Apply one ``covenant_reputation`` payload; True if it invalidated an agent.

        Both directions invalidate (an upgrade is then visible at once too).
        A payload without a readable ``agent_id`` is logged and ignored; one
        with an agent but odd other fields still invalidates (fail-closed).
        Never raises.
        """
        data: object = None
        try:
            data = json.loads(payload)
            raw = data.get("agent_id") if isinstance(data, dict) else None
            agent = uuid.UUID(raw) if isinstance(raw, str) else None
        except (ValueError, TypeError, RecursionError):  # RecursionError: "[[[[..." nested
            agent = None
        if agent is None:
            with self._lock:
                self.stats.notifications_ignored += 1
            _emit(
                logging.WARNING,
                "reputation.notification_malformed",
                "notification ignored: no readable agent_id",
            )
            return False
        assert isinstance(data, dict)
        direction = data.get("direction")
        if direction not in ("upgrade", "downgrade"):
            _emit(
                logging.WARNING,
                "reputation.notification_odd",
                "notification with an unknown direction; invalidating anyway",
                agent,
            )
            direction = "unknown"
        self.invalidate(agent, reason=str(direction))
        return True

    def close(self) -> None:
        """Stop the private refresh pool (an injected executor is the caller's)."""
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=True, cancel_futures=True)


class ReputationListener:
    """LISTEN ``covenant_reputation`` on a dedicated connection; feed a resolver.

    A daemon thread consumes the notifications; on any failure it tells the
    resolver (:meth:`ReputationResolver.push_lost`) and reconnects with
    exponential backoff; after each successful LISTEN it calls
    :meth:`ReputationResolver.push_connected`. ``start()``/``close()``, or
    use it as a context manager.
    """

    def __init__(
        self,
        resolver: ReputationResolver,
        database_url: str,
        *,
        reconnect_delay_s: float = 0.5,
        max_reconnect_delay_s: float = 30.0,
        poll_s: float = 0.5,
        connect_timeout_s: int = 10,
    ) -> None:
        self.resolver = resolver
        self._url = database_url
        self.reconnect_delay_s = reconnect_delay_s
        self.max_reconnect_delay_s = max_reconnect_delay_s
        self.poll_s = poll_s
        self.connect_timeout_s = connect_timeout_s
        self._stop = threading.Event()
        self._state = threading.Condition()
        self._listening = False
        self._sessions = 0
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def sessions(self) -> int:
        """How many times LISTEN succeeded (1 + reconnections)."""
        return self._sessions

    def start(self) -> ReputationListener:
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("listener already started or closed")
        self._thread = threading.Thread(
            target=self._run, name="covenant-reputation-listener", daemon=True
        )
        self._thread.start()
        return self

    def wait_until_listening(self, timeout_s: float, *, sessions: int = 1) -> bool:
        """Block until LISTEN is active in session number ``sessions`` or later."""
        with self._state:
            return self._state.wait_for(
                lambda: self._listening and self._sessions >= sessions, timeout_s
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close its connection (returns within ~poll_s)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                _emit(logging.WARNING, "reputation.listener_stuck", "listener did not stop in time")

    def __enter__(self) -> ReputationListener:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self) -> None:
        delay = self.reconnect_delay_s
        while not self._stop.is_set():
            before = self._sessions
            try:
                self._session()
            except Exception as exc:  # never let the thread die
                _emit(
                    logging.WARNING,
                    "reputation.listener_down",
                    "listener disconnected; reconnecting",
                    error=type(exc).__name__,
                )
            finally:
                with self._state:
                    self._listening = False
                    self._state.notify_all()
                self.resolver.push_lost(closing=self._stop.is_set())
            if self._sessions > before:  # it did listen: start the backoff over
                delay = self.reconnect_delay_s
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.max_reconnect_delay_s)

    def _session(self) -> None:
        with psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self.connect_timeout_s,
            application_name="covenant-reputation-listener",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        ) as conn:
            conn.execute("LISTEN covenant_reputation")
            self.resolver.push_connected()
            with self._state:
                self._listening = True
                self._sessions += 1
                self._state.notify_all()
            _emit(logging.INFO, "reputation.listening", "listener listening")
            while not self._stop.is_set():
                for note in conn.notifies(timeout=self.poll_s):
                    self.resolver.handle_notification(note.payload)
                    if self._stop.is_set():
                        break

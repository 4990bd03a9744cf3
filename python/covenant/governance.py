"""Actor identity and authorization of governed mutations.

An ``actor_id`` is either a person — the UUID in a verified JWT's ``sub`` —
or a service — ``service:<name>`` from an mTLS client certificate. It is
never empty: :func:`resolve_actor_id` raises when there is no authenticated
identity, and the SQL functions refuse a malformed one (INVALID_ARGUMENT)
whatever the client. Which actor may perform which mutation is the policy
table ``covenant.mutation_policy``, checked inside every governed function;
:func:`authorize_mutation` asks the same question ahead of time (for
example to fail a request before reserving anything).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from covenant.catalogue import Operation
from covenant.db import Conn, Connector
from covenant.errors import InvalidArgument, NotAuthorized

SERVICE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_PERSON: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_actor_id(value: object) -> bool:
    """Whether ``value`` is a well-formed actor id (the SQL rule, exactly)."""
    if not isinstance(value, str):
        return False
    if _PERSON.fullmatch(value):
        return True
    return value.startswith("service:") and SERVICE_NAME.fullmatch(value[8:]) is not None


def resolve_actor_id(*, jwt_sub: str | None = None, mtls_service: str | None = None) -> str:
    """The actor of a request: the JWT subject (a person), else the mTLS service.

    ``jwt_sub`` must be a UUID (any case; normalized to lower case).
    ``mtls_service`` is the service name from the client certificate, with or
    without the ``service:`` prefix. Raises :class:`NotAuthorized` when
    neither is given and :class:`InvalidArgument` when the one given is
    malformed; never returns an empty string.
    """
    if jwt_sub is not None:
        try:
            parsed = uuid.UUID(jwt_sub)
        except (ValueError, AttributeError, TypeError):
            raise InvalidArgument(f"JWT sub is not a UUID: {jwt_sub!r}") from None
        actor = str(parsed)
        if actor != jwt_sub.strip().lower():  # no braces, urn: or bare hex forms
            raise InvalidArgument(f"JWT sub is not a canonical UUID: {jwt_sub!r}")
        return actor
    if mtls_service is not None:
        name = mtls_service.removeprefix("service:")
        if not SERVICE_NAME.fullmatch(name):
            raise InvalidArgument(
                f"mTLS service name {mtls_service!r} does not match [a-z0-9][a-z0-9_.-]{{0,63}}"
            )
        return f"service:{name}"
    raise NotAuthorized("no authenticated identity: neither a JWT subject nor an mTLS service")


@dataclass(frozen=True)
class MutationContext:
    """Who performs a mutation, and its idempotency key, fixed before the first attempt."""

    actor_id: str
    mutation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not is_actor_id(self.actor_id):
            raise InvalidArgument(f"malformed actor_id {self.actor_id!r}")


def is_authorized(
    db: Connector, operation: Operation | str, actor_id: str, *, conn: Conn | None = None
) -> bool:
    """Whether the mutation policy lets ``actor_id`` perform ``operation``."""
    if not is_actor_id(actor_id):
        return False
    row = db.fetch_one(
        "SELECT EXISTS (SELECT FROM covenant.mutation_policy AS p "
        "WHERE p.operation = %s AND %s ~ p.actor_pattern) AS allowed",
        [str(operation), actor_id],
        conn=conn,
    )
    return bool(row and row["allowed"])


def authorize_mutation(
    db: Connector, operation: Operation | str, actor_id: str, *, conn: Conn | None = None
) -> None:
    """Raise :class:`NotAuthorized` (or :class:`InvalidArgument`) unless the policy allows it."""
    if not is_actor_id(actor_id):
        raise InvalidArgument(f"malformed actor_id {actor_id!r}")
    if not is_authorized(db, operation, actor_id, conn=conn):
        raise NotAuthorized(f"actor {actor_id} may not {operation}")

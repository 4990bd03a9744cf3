"""Shared by the ledger's test modules: the database they share, and a footprint.

The ``connector`` and ``ledger`` fixtures live in conftest.py.
"""

from __future__ import annotations

import uuid
from typing import Any

from covenant.db import Connector


def footprint(db: Connector, account: uuid.UUID) -> dict[str, Any]:
    """What one account has written, read in a transaction of its own.

    Compared before and after a refused call: journal lines, mutations, audit
    entries on its chain, reservations, and every lot's amounts.
    """
    row = db.fetch_one(
        "SELECT (SELECT count(*) FROM covenant.credit_ledger WHERE account_id = %(a)s) AS lines, "
        "(SELECT count(*) FROM covenant.ledger_mutations WHERE account_id = %(a)s) AS mutations, "
        "(SELECT count(*) FROM covenant.audit_trail_chain_links "
        " WHERE domain_tag = 'account:' || %(a)s) AS entries, "
        "(SELECT count(*) FROM covenant.credit_reservations WHERE account_id = %(a)s) AS reservations, "
        "(SELECT array_agg(ARRAY[balance, reserved, consumed] ORDER BY lot_id) "
        " FROM covenant.credit_lots WHERE account_id = %(a)s) AS lots",
        {"a": account},
    )
    assert row is not None
    return row

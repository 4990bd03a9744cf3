-- Grants of the credit ledger (docs/security.md, docs/ledger.md).
--
-- covenant_app and covenant_dba read every ledger table; nobody but the
-- owner writes them, and the owner only through the governed functions
-- (SECURITY DEFINER). Row locks are taken inside those functions, so the
-- runtime needs no UPDATE privilege for SELECT ... FOR UPDATE.

GRANT SELECT ON
covenant.account_kinds,
covenant.ledger_entry_types,
covenant.lot_source_types,
covenant.ledger_operations,
covenant.mutation_policy,
covenant.accounts,
covenant.ledger_mutations,
covenant.credit_lots,
covenant.credit_reservations,
covenant.reservation_lots,
covenant.credit_ledger,
covenant.usage_tokens,
covenant.reputation_states,
covenant.reputation_event_types,
covenant.agent_reputation,
covenant.agent_task_reputation,
covenant.invariants
TO covenant_app, covenant_dba;

GRANT USAGE ON TYPE covenant.micro_usd, covenant.basis_points, covenant.reputation_outcome
TO covenant_app, covenant_dba;

-- The governed functions and the reads.
GRANT EXECUTE ON FUNCTION
covenant.create_account(uuid, text, text, uuid),
covenant.set_receivable_bound(uuid, bigint, text, uuid),
covenant.allocate_credits(uuid, bigint, text, text, uuid, timestamptz),
covenant.reserve_credits(uuid, bigint, interval, text, uuid),
covenant.finalize_reservation(uuid, bigint, text, uuid),
covenant.release_reservation(uuid, text, uuid),
covenant.finalize_usage_report(uuid, uuid, bigint, text),
covenant.expire_reservations(timestamptz, integer),
covenant.transfer_credits(uuid, uuid, bigint, text, uuid),
covenant.distribute_revenue(uuid, bigint, jsonb, text, uuid),
covenant.record_reputation_event(uuid, text, integer, text, uuid, text, jsonb),
covenant.split_by_bps(bigint, integer[]),
covenant.account_balance(uuid),
covenant.reconcile(interval)
TO covenant_app, covenant_dba;

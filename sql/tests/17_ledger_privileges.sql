-- Privileges on the credit ledger, as each role (docs/ledger.md,
-- docs/security.md). covenant_app and covenant_dba read every ledger table
-- and write none: every change goes through the governed functions
-- (SECURITY DEFINER, search_path pinned), which covenant_app may execute,
-- while the private helpers (covenant._*) are out of everyone's reach. The
-- journal, the mutation record and the usage tokens are append-only even for
-- the owner and a superuser, in any session_replication_role; the state
-- columns move along their machines and the lots conserve, whoever writes.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(251);

-- The ledger tables, each with a column an UPDATE may name.
CREATE TEMP TABLE ledger_tables (tbl, col) AS
VALUES
('accounts', 'kind'),
('ledger_mutations', 'request'),
('credit_lots', 'balance'),
('credit_reservations', 'status'),
('reservation_lots', 'amount_micro'),
('credit_ledger', 'amount_micro'),
('usage_tokens', 'actual_micro'),
('agent_reputation', 'score_bps'),
('agent_task_reputation', 'score_bps'),
('mutation_policy', 'description'),
('account_kinds', 'description'),
('ledger_entry_types', 'description'),
('lot_source_types', 'description'),
('ledger_operations', 'description'),
('reputation_states', 'description'),
('reputation_event_types', 'description'),
('invariants', 'statement');
GRANT SELECT ON ledger_tables TO covenant_app, covenant_dba;

-- What covenant_app and covenant_dba hold on the ledger tables beyond SELECT,
-- or SELECT where it is missing (a catalog check, shown able to fail below).
CREATE TEMP VIEW ledger_privilege_drift AS
SELECT
    r.role_name,
    p.priv,
    ('covenant.' || t.tbl)::regclass AS rel
FROM (VALUES ('covenant_app'), ('covenant_dba')) AS r (role_name)
CROSS JOIN ledger_tables AS t
CROSS JOIN
    unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
        AS p (priv)
WHERE
    pg_catalog.has_table_privilege(r.role_name, ('covenant.' || t.tbl)::regclass, p.priv)
    <> (p.priv = 'SELECT');

-- Private helpers (covenant._*) that covenant_app or covenant_dba may execute.
CREATE TEMP VIEW executable_private_helpers AS
SELECT
    r.role_name,
    p.oid::regprocedure AS fn
FROM pg_catalog.pg_proc AS p
INNER JOIN pg_catalog.pg_namespace AS n ON p.pronamespace = n.oid
CROSS JOIN (VALUES ('covenant_app'), ('covenant_dba')) AS r (role_name)
WHERE
    n.nspname = 'covenant'
    AND p.proname LIKE '\_%'
    AND pg_catalog.has_function_privilege(r.role_name, p.oid, 'EXECUTE');

-- The governed functions and the reads of the ledger.
CREATE TEMP TABLE governed_functions (fn) AS
VALUES
('covenant.create_account(uuid, text, text, uuid)'::regprocedure),
('covenant.set_receivable_bound(uuid, bigint, text, uuid)'::regprocedure),
('covenant.allocate_credits(uuid, bigint, text, text, uuid, timestamptz)'::regprocedure),
('covenant.reserve_credits(uuid, bigint, interval, text, uuid)'::regprocedure),
('covenant.finalize_reservation(uuid, bigint, text, uuid)'::regprocedure),
('covenant.release_reservation(uuid, text, uuid)'::regprocedure),
('covenant.finalize_usage_report(uuid, uuid, bigint, text)'::regprocedure),
('covenant.expire_reservations(timestamptz, integer)'::regprocedure),
('covenant.transfer_credits(uuid, uuid, bigint, text, uuid)'::regprocedure),
('covenant.distribute_revenue(uuid, bigint, jsonb, text, uuid)'::regprocedure),
('covenant.record_reputation_event(uuid, text, integer, text, uuid, text, jsonb)'::regprocedure),
('covenant.account_balance(uuid)'::regprocedure),
('covenant.reconcile(interval)'::regprocedure),
('covenant.split_by_bps(bigint, integer[])'::regprocedure);

-- What each role tries to write, per table (%1$s the table, %2$I a column).
CREATE TEMP TABLE ledger_writes (tbl, op, stmt) AS
SELECT
    t.tbl,
    s.op,
    pg_catalog.format(s.stmt, 'covenant.' || t.tbl, t.col) AS stmt
FROM ledger_tables AS t
CROSS JOIN (
    VALUES
    ('INSERT', 'INSERT INTO %1$s DEFAULT VALUES'),
    ('UPDATE', 'UPDATE %1$s SET %2$I = %2$I'),
    ('DELETE', 'DELETE FROM %1$s'),
    ('TRUNCATE', 'TRUNCATE %1$s')
) AS s (op, stmt);
GRANT SELECT ON ledger_writes TO covenant_app, covenant_dba;

-- Catalog: exactly SELECT on every ledger table, for both roles.
SELECT
    table_privs_are(
        'covenant', t.tbl, 'covenant_app', ARRAY['SELECT'],
        'covenant_app holds SELECT and nothing else on covenant.' || t.tbl
    )
FROM ledger_tables AS t;
SELECT
    table_privs_are(
        'covenant', t.tbl, 'covenant_dba', ARRAY['SELECT'],
        'covenant_dba holds SELECT and nothing else on covenant.' || t.tbl
    )
FROM ledger_tables AS t;

-- Catalog: covenant_app (and covenant_dba) may execute every governed
-- function and read.
SELECT
    ok(
        pg_catalog.has_function_privilege('covenant_app', g.fn, 'EXECUTE'),
        'covenant_app can execute ' || g.fn::text
    )
FROM governed_functions AS g;
SELECT is_empty(
    $$SELECT g.fn FROM governed_functions AS g
      WHERE NOT pg_catalog.has_function_privilege('covenant_dba', g.fn, 'EXECUTE')$$,
    'covenant_dba can execute every governed function too'
);
SELECT is_empty(
    'SELECT * FROM tests.insecure_definer_functions()',
    'every SECURITY DEFINER function (the ledger''s included) pins search_path'
);
SELECT is_empty(
    'SELECT * FROM tests.public_executable_functions()',
    'no function in covenant (the ledger''s included) is executable by PUBLIC'
);
SELECT is_empty(
    $$SELECT g.fn FROM governed_functions AS g
      INNER JOIN pg_catalog.pg_proc AS p ON g.fn = p.oid
      WHERE NOT p.prosecdef AND p.proname <> 'split_by_bps'$$,
    'every governed function is SECURITY DEFINER (the reads too: they call private helpers)'
);
SELECT is_empty(
    $$SELECT g.fn FROM governed_functions AS g
      INNER JOIN pg_catalog.pg_proc AS p ON g.fn = p.oid
      WHERE p.prosecdef AND p.proname = 'split_by_bps'$$,
    'split_by_bps, pure arithmetic, runs with the caller''s privileges'
);

-- covenant_app: a full flow through the API.
SET LOCAL ROLE covenant_app;
SELECT lives_ok(
    $$SELECT covenant.create_account('17000000-0000-4000-8000-000000000001', 'user',
        'service:billing', '17000000-0000-4000-9000-000000000001')$$,
    'covenant_app creates a user account through covenant.create_account'
);
SELECT lives_ok(
    $$SELECT covenant.create_account('17000000-0000-4000-8000-000000000002', 'agent',
        'service:billing', '17000000-0000-4000-9000-000000000002')$$,
    'covenant_app creates an agent account through covenant.create_account'
);
SELECT lives_ok(
    $$SELECT covenant.set_receivable_bound('17000000-0000-4000-8000-000000000001', 5000000,
        'service:billing', '17000000-0000-4000-9000-000000000003')$$,
    'covenant_app sets a receivable bound through covenant.set_receivable_bound'
);
SELECT isnt(
    covenant.allocate_credits(
        '17000000-0000-4000-8000-000000000001', 1000000, 'deposit', 'service:billing',
        '17000000-0000-4000-9000-000000000004'
    ),
    NULL,
    'covenant_app allocates a deposit through covenant.allocate_credits'
);
SELECT isnt(
    covenant.reserve_credits(
        '17000000-0000-4000-8000-000000000001', 400000, '1 hour', 'service:billing',
        '17000000-0000-4000-9000-000000000005'
    ),
    NULL,
    'covenant_app reserves through covenant.reserve_credits'
);
SELECT lives_ok(
    $$SELECT covenant.finalize_reservation(
        (SELECT r.reservation_id FROM covenant.credit_reservations AS r
         WHERE r.mutation_id = '17000000-0000-4000-9000-000000000005'),
        250000, 'service:billing', '17000000-0000-4000-9000-000000000006')$$,
    'covenant_app finalizes through covenant.finalize_reservation'
);
SELECT isnt(
    covenant.reserve_credits(
        '17000000-0000-4000-8000-000000000001', 100000, '1 hour', 'service:billing',
        '17000000-0000-4000-9000-000000000007'
    ),
    NULL,
    'covenant_app reserves again'
);
SELECT lives_ok(
    $$SELECT covenant.finalize_usage_report('17000000-0000-4000-9000-000000000008',
        (SELECT r.reservation_id FROM covenant.credit_reservations AS r
         WHERE r.mutation_id = '17000000-0000-4000-9000-000000000007'),
        60000, 'service:billing')$$,
    'covenant_app finalizes a usage report through covenant.finalize_usage_report'
);
SELECT isnt(
    covenant.reserve_credits(
        '17000000-0000-4000-8000-000000000001', 10000, '1 hour', 'service:billing',
        '17000000-0000-4000-9000-000000000009'
    ),
    NULL,
    'covenant_app reserves a third time'
);
SELECT lives_ok(
    $$SELECT covenant.release_reservation(
        (SELECT r.reservation_id FROM covenant.credit_reservations AS r
         WHERE r.mutation_id = '17000000-0000-4000-9000-000000000009'),
        'service:billing', '17000000-0000-4000-9000-00000000000a')$$,
    'covenant_app releases through covenant.release_reservation'
);
SELECT lives_ok(
    $$SELECT covenant.transfer_credits('17000000-0000-4000-8000-000000000001',
        '17000000-0000-4000-8000-000000000002', 40000, 'service:billing',
        '17000000-0000-4000-9000-00000000000b')$$,
    'covenant_app transfers through covenant.transfer_credits'
);
SELECT lives_ok(
    $$SELECT covenant.distribute_revenue('17000000-0000-4000-8000-000000000002', 30000,
        '[{"account_id": "17000000-0000-4000-8000-000000000001", "bps": 10000}]',
        'service:billing', '17000000-0000-4000-9000-00000000000c')$$,
    'covenant_app distributes revenue through covenant.distribute_revenue'
);
SELECT is(
    (
        covenant.record_reputation_event(
            '17000000-0000-4000-8000-000000000002', 'task_completed', 9000, 'service:billing',
            '17000000-0000-4000-9000-00000000000d', 'translation'
        )
    ).score_bps,
    1800,
    'covenant_app records a reputation event through covenant.record_reputation_event'
);
SELECT is(
    covenant.expire_reservations(),
    0,
    'covenant_app runs the expiry sweep (nothing is due)'
);
SELECT results_eq(
    $$SELECT available, reserved, consumed, allocated, expired
      FROM covenant.account_balance('17000000-0000-4000-8000-000000000001')$$,
    $$VALUES (680000::numeric, 0::numeric, 350000::numeric, 1030000::numeric, 0::numeric)$$,
    'covenant_app reads the balance: 1000000 + 30000 in, 250000 + 60000 spent, 40000 moved out'
);
SELECT is(
    covenant.split_by_bps(1000001, ARRAY[3333, 6667]),
    ARRAY[333300::bigint, 666701::bigint],
    'covenant_app can call covenant.split_by_bps'
);
SELECT results_eq(
    $$SELECT m.mutation_id FROM covenant.ledger_mutations AS m
      WHERE m.mutation_id::text LIKE '17000000-%' ORDER BY m.mutation_id$$,
    $$SELECT k.entry_id FROM covenant.audit_trail_chain_links AS k
      WHERE k.domain_tag IN ('account:17000000-0000-4000-8000-000000000001',
                             'account:17000000-0000-4000-8000-000000000002')
      ORDER BY k.entry_id$$,
    'every mutation of the flow has its audit entry on its account''s chain, and nothing else is there'
);
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.ledger_mutations AS m
        WHERE m.mutation_id::text LIKE '17000000-%' AND m.actor_id = 'service:billing'
    ),
    13,
    'the mutation record names the actor of every call'
);
SELECT is_empty(
    $$SELECT t.tbl FROM ledger_tables AS t
      WHERE (xpath('/row/c/text()', query_to_xml(
          format('SELECT count(*) AS c FROM covenant.%I', t.tbl), FALSE, TRUE, ''
      )))[1]::text = '0'$$,
    'covenant_app reads every ledger table, and the flow left a row in each'
);

-- covenant_app: no direct write of any kind on any ledger table, with rows
-- in each (the flow above).
SELECT
    throws_ok(
        w.stmt, '42501', NULL,
        pg_catalog.format('covenant_app: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM ledger_writes AS w;
SELECT throws_ok(
    $$UPDATE covenant.credit_lots SET balance = balance + 1000000
      WHERE account_id = '17000000-0000-4000-8000-000000000001'$$,
    '42501', NULL, 'covenant_app cannot mint credits by updating a lot'
);
SELECT throws_ok(
    $$INSERT INTO covenant.ledger_mutations (mutation_id, account_id, operation, actor_id, request, result)
      VALUES (gen_random_uuid(), '17000000-0000-4000-8000-000000000001', 'allocate_credits',
              'service:billing', '{}', '{}')$$,
    '42501', NULL, 'covenant_app cannot forge a mutation record'
);
SELECT throws_ok(
    $$UPDATE covenant.mutation_policy SET actor_pattern = '^' WHERE operation = 'allocate_credits'$$,
    '42501', NULL, 'covenant_app cannot widen the mutation policy'
);

-- covenant_app: none of the ledger's private helpers.
SELECT
    throws_ok(
        h.stmt, '42501', NULL, 'covenant_app cannot execute covenant.' || h.fn
    )
FROM (
    VALUES
    ('_ledger_check_call', $$SELECT covenant._ledger_check_call('service:billing', gen_random_uuid())$$),
    ('_ledger_check_amount', $$SELECT covenant._ledger_check_amount('p_amount_micro', 1)$$),
    ('_ledger_require', $$SELECT covenant._ledger_require('p_account_id', 1)$$),
    ('_authorize', $$SELECT covenant._authorize('allocate_credits', 'service:billing')$$),
    ('_lock_account', $$SELECT covenant._lock_account('17000000-0000-4000-8000-000000000001')$$),
    (
        '_mutation_replay',
        $$SELECT covenant._mutation_replay(gen_random_uuid(), 'allocate_credits', '{}')$$
    ),
    (
        '_mutation_record',
        $$SELECT covenant._mutation_record(gen_random_uuid(), '17000000-0000-4000-8000-000000000001',
            'allocate_credits', 'service:billing', '{}', '{}')$$
    ),
    (
        '_ledger_audit',
        $$SELECT covenant._ledger_audit('17000000-0000-4000-8000-000000000001', gen_random_uuid(),
            'allocate_credits', 'service:billing', '{}')$$
    ),
    ('_draw_lots', $$SELECT * FROM covenant._draw_lots('17000000-0000-4000-8000-000000000001', 1)$$),
    (
        '_resolve_reservation',
        $$SELECT covenant._resolve_reservation('17000000-0000-4000-8000-000000000001',
            gen_random_uuid(), 'finalized', 0, gen_random_uuid(), 'release')$$
    ),
    (
        '_move_credits',
        $$SELECT covenant._move_credits('17000000-0000-4000-8000-000000000001', 1,
            ARRAY['17000000-0000-4000-8000-000000000002'::uuid], ARRAY[1::bigint], gen_random_uuid(),
            'transfer_out', 'transfer_in', 'transfer')$$
    ),
    ('_reservation_account', $$SELECT covenant._reservation_account(gen_random_uuid())$$),
    (
        '_settle_reservation',
        $$SELECT covenant._settle_reservation('release_reservation',
            '17000000-0000-4000-8000-000000000001', gen_random_uuid(), 0, 'service:billing',
            gen_random_uuid(), '{}')$$
    ),
    ('_reconcile_checks', $$SELECT * FROM covenant._reconcile_checks('5 minutes')$$),
    ('_transition', $$SELECT covenant._transition('reservation', 'finalized', 'pending')$$),
    ('_raise', $$SELECT covenant._raise('INVALID_ARGUMENT', 'forged')$$)
) AS h (fn, stmt);

-- The reads call private helpers as their owner (SECURITY DEFINER): the
-- runtime gets a result, or ACCOUNT_UNKNOWN, never 42501 (a regression test).
SELECT lives_ok(
    'SELECT * FROM covenant.reconcile()',
    'covenant_app can run covenant.reconcile()'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.account_balance('17000000-0000-4000-8000-0000000000ff')$$,
    'CV017', NULL,
    'covenant_app: account_balance of an unknown account is ACCOUNT_UNKNOWN'
);
RESET ROLE;

-- covenant_dba: reads every ledger table, writes none.
SET LOCAL ROLE covenant_dba;
SELECT
    lives_ok(
        pg_catalog.format('SELECT count(*) FROM covenant.%I', t.tbl),
        'covenant_dba can SELECT from covenant.' || t.tbl
    )
FROM ledger_tables AS t;
SELECT
    throws_ok(
        w.stmt, '42501', NULL,
        pg_catalog.format('covenant_dba: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM ledger_writes AS w
WHERE w.op IN ('UPDATE', 'DELETE');
SELECT throws_ok(
    $$SELECT covenant._lock_account('17000000-0000-4000-8000-000000000001')$$,
    '42501', NULL, 'covenant_dba cannot execute covenant._lock_account'
);
RESET ROLE;

-- What is in the append-only tables before the owner and a superuser try.
CREATE TEMP TABLE append_only_before AS
SELECT
    (SELECT array_agg(j ORDER BY j.account_id, j.mutation_id, j.line_no) FROM covenant.credit_ledger AS j) AS journal,
    (SELECT array_agg(m ORDER BY m.mutation_id) FROM covenant.ledger_mutations AS m) AS mutations,
    (SELECT array_agg(u ORDER BY u.jti) FROM covenant.usage_tokens AS u) AS tokens;

-- The journal, the mutation record and the usage tokens are append-only for
-- the owner, for a superuser, and with replication triggers off (ENABLE
-- ALWAYS). ledger_mutations is referenced by foreign keys, so TRUNCATE needs
-- CASCADE to reach its trigger (without it the foreign keys refuse first).
CREATE TEMP TABLE append_only_writes (tbl, op, stmt) AS
VALUES
('credit_ledger', 'UPDATE', 'UPDATE covenant.credit_ledger SET amount_micro = amount_micro + 1'),
('credit_ledger', 'DELETE', 'DELETE FROM covenant.credit_ledger'),
('credit_ledger', 'TRUNCATE', 'TRUNCATE covenant.credit_ledger'),
('ledger_mutations', 'UPDATE', $$UPDATE covenant.ledger_mutations SET result = '{}'$$),
('ledger_mutations', 'DELETE', 'DELETE FROM covenant.ledger_mutations'),
('ledger_mutations', 'TRUNCATE', 'TRUNCATE covenant.ledger_mutations CASCADE'),
('usage_tokens', 'UPDATE', 'UPDATE covenant.usage_tokens SET actual_micro = 0'),
('usage_tokens', 'DELETE', 'DELETE FROM covenant.usage_tokens'),
('usage_tokens', 'TRUNCATE', 'TRUNCATE covenant.usage_tokens');
GRANT SELECT ON append_only_writes TO covenant_migrator;

SET LOCAL ROLE covenant_migrator;
SELECT
    throws_ok(
        w.stmt, 'CV022',
        pg_catalog.format('JOURNAL_APPEND_ONLY: %s on covenant.%s is refused', w.op, w.tbl),
        pg_catalog.format('covenant_migrator (the owner): %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM append_only_writes AS w;
RESET ROLE;

SELECT
    throws_ok(
        w.stmt, 'CV022',
        pg_catalog.format('JOURNAL_APPEND_ONLY: %s on covenant.%s is refused', w.op, w.tbl),
        pg_catalog.format('a superuser: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM append_only_writes AS w;

SET LOCAL session_replication_role = replica;
SELECT
    throws_ok(
        w.stmt, 'CV022',
        pg_catalog.format('JOURNAL_APPEND_ONLY: %s on covenant.%s is refused', w.op, w.tbl),
        pg_catalog.format('a superuser in replica mode: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM append_only_writes AS w;

-- State machines and conservation hold for a superuser, in replica mode too.
SELECT throws_ok(
    $$UPDATE covenant.credit_reservations SET status = 'pending', consumed_micro = 0,
        released_micro = 0, resolved_by = NULL, resolved_at = NULL
      WHERE mutation_id = '17000000-0000-4000-9000-000000000005'$$,
    'CV013', 'INVALID_TRANSITION: reservation cannot go from finalized to pending',
    'a superuser in replica mode cannot move a reservation from finalized back to pending'
);
RESET session_replication_role;
SELECT throws_ok(
    $$UPDATE covenant.credit_reservations SET status = 'pending', consumed_micro = 0,
        released_micro = 0, resolved_by = NULL, resolved_at = NULL
      WHERE mutation_id = '17000000-0000-4000-9000-000000000005'$$,
    'CV013', 'INVALID_TRANSITION: reservation cannot go from finalized to pending',
    'a superuser cannot move a reservation from finalized back to pending (state machine)'
);
SELECT throws_ok(
    $$UPDATE covenant.credit_reservations SET status = 'pending'
      WHERE mutation_id = '17000000-0000-4000-9000-000000000009'$$,
    'CV013', 'INVALID_TRANSITION: reservation cannot go from released to pending',
    'a superuser cannot move a reservation from released back to pending'
);
SELECT throws_ok(
    $$UPDATE covenant.credit_lots SET balance = balance + 1000000
      WHERE mutation_id = '17000000-0000-4000-9000-000000000004'$$,
    '23514', 'new row for relation "credit_lots" violates check constraint "lot_conservation"',
    'a superuser cannot mint credits in a lot: balance + reserved + consumed = original_allocation'
);
SELECT throws_ok(
    $$UPDATE covenant.credit_lots SET balance = balance - 1, consumed = consumed + 1, status = 'exhausted'
      WHERE mutation_id = '17000000-0000-4000-9000-000000000004'$$,
    '23514', 'new row for relation "credit_lots" violates check constraint "lot_status_matches_amounts"',
    'a superuser cannot mark a lot with a balance exhausted'
);
SET LOCAL ROLE covenant_migrator;
SELECT throws_ok(
    $$UPDATE covenant.credit_lots SET reserved = reserved + 1
      WHERE mutation_id = '17000000-0000-4000-9000-000000000004'$$,
    '23514', 'new row for relation "credit_lots" violates check constraint "lot_conservation"',
    'the owner cannot break a lot''s conservation either'
);
RESET ROLE;

SELECT results_eq(
    $$SELECT
        (SELECT array_agg(j ORDER BY j.account_id, j.mutation_id, j.line_no) FROM covenant.credit_ledger AS j),
        (SELECT array_agg(m ORDER BY m.mutation_id) FROM covenant.ledger_mutations AS m),
        (SELECT array_agg(u ORDER BY u.jti) FROM covenant.usage_tokens AS u)$$,
    'SELECT journal, mutations, tokens FROM append_only_before',
    'after every refused change the journal, the mutation record and the usage tokens are intact'
);

-- Catalog: SELECT and nothing else on the ledger tables, no private helper
-- executable; each shown able to fail.
SELECT is_empty(
    'SELECT * FROM ledger_privilege_drift',
    'covenant_app and covenant_dba hold SELECT only on every ledger table'
);
SELECT is_empty(
    'SELECT * FROM executable_private_helpers',
    'covenant_app and covenant_dba cannot execute any private helper covenant._*'
);

GRANT UPDATE ON covenant.credit_lots TO covenant_app;
GRANT REFERENCES ON covenant.accounts TO covenant_dba;
REVOKE SELECT ON covenant.invariants FROM covenant_app;
GRANT EXECUTE ON FUNCTION covenant._lock_account(uuid) TO covenant_app;
SELECT set_eq(
    'SELECT role_name, rel::text, priv FROM ledger_privilege_drift',
    $$VALUES ('covenant_app', 'covenant.credit_lots', 'UPDATE'),
             ('covenant_dba', 'covenant.accounts', 'REFERENCES'),
             ('covenant_app', 'covenant.invariants', 'SELECT')$$,
    'a write grant, a REFERENCES grant and a missing read are reported'
);
SELECT set_eq(
    'SELECT role_name, fn FROM executable_private_helpers',
    $$VALUES ('covenant_app', 'covenant._lock_account(uuid)'::regprocedure)$$,
    'a private ledger helper granted to covenant_app is reported'
);

SELECT * FROM finish();
ROLLBACK;

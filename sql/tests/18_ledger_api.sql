-- The ledger API in SQL (docs/ledger.md, docs/invariants.md): each refusal
-- by SQLSTATE, each followed by the proof that it wrote nothing (journal
-- lines, mutations, audit chain links, lots, reservations and accounts
-- counted before and after), then the semantics: idempotent replays, the
-- draw order, partial finalization, the largest-remainder split and a
-- reconciliation that holds. Everything runs as covenant_app but for the
-- few steps only an operator can take (marked).
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(273);

-- What the ledger has written so far, everywhere.
CREATE FUNCTION pg_temp.ledger_written() RETURNS bigint[]
LANGUAGE sql STABLE
AS $$
    SELECT ARRAY[
        (SELECT count(*) FROM covenant.credit_ledger),
        (SELECT count(*) FROM covenant.ledger_mutations),
        (SELECT count(*) FROM covenant.audit_trail_chain_links),
        (SELECT count(*) FROM covenant.credit_lots),
        (SELECT count(*) FROM covenant.credit_reservations),
        (SELECT count(*) FROM covenant.accounts)
    ]
$$;

-- A refusal: p_sql raises p_code, and nothing was written.
CREATE FUNCTION pg_temp.refuses(p_sql text, p_code text, p_description text) RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    v_before bigint [] := pg_temp.ledger_written();
BEGIN
    RETURN NEXT throws_ok(p_sql, p_code, NULL, p_description);
    RETURN NEXT is(pg_temp.ledger_written(), v_before, p_description || ': nothing written');
END;
$$;

-- A replay: p_sql returns p_expected (what the first call returned, as
-- text: '' for void), and nothing was written.
CREATE FUNCTION pg_temp.replays(p_sql text, p_expected text, p_description text) RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    v_before bigint [] := pg_temp.ledger_written();
    v_got text;
BEGIN
    BEGIN
        EXECUTE p_sql INTO v_got;
    EXCEPTION WHEN OTHERS THEN
        v_got := pg_catalog.format('%s: %s', SQLSTATE, SQLERRM);
    END;
    RETURN NEXT is(v_got, p_expected, p_description);
    RETURN NEXT is(pg_temp.ledger_written(), v_before, p_description || ': nothing written');
END;
$$;

-- The reservation made by a mutation.
CREATE FUNCTION pg_temp.res(p_mutation_id uuid) RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT r.reservation_id FROM covenant.credit_reservations AS r WHERE r.mutation_id = p_mutation_id
$$;

-- Accounts (18000000-0000-4000-8000-0000000000NN): 01 user U, 02 user V,
-- 03 platform P, 04 agent A, 05 treasury T, 06 user Q (quarantined later),
-- 07 user B (bounded), 08 user E (lots with expiries), 09 user R1, 0a user R2.
-- Mutations: 18000000-0000-4000-9000-000000000NNN.
SET LOCAL ROLE covenant_app;
DO $setup$
BEGIN
    PERFORM covenant.create_account(a.id, a.kind, 'service:billing', a.mutation_id)
    FROM (
        VALUES
        ('18000000-0000-4000-8000-000000000001'::uuid, 'user', '18000000-0000-4000-9000-000000000001'::uuid),
        ('18000000-0000-4000-8000-000000000002', 'user', '18000000-0000-4000-9000-000000000002'),
        ('18000000-0000-4000-8000-000000000003', 'platform', '18000000-0000-4000-9000-000000000003'),
        ('18000000-0000-4000-8000-000000000004', 'agent', '18000000-0000-4000-9000-000000000004'),
        ('18000000-0000-4000-8000-000000000005', 'treasury', '18000000-0000-4000-9000-000000000005'),
        ('18000000-0000-4000-8000-000000000006', 'user', '18000000-0000-4000-9000-000000000006'),
        ('18000000-0000-4000-8000-000000000007', 'user', '18000000-0000-4000-9000-000000000007'),
        ('18000000-0000-4000-8000-000000000008', 'user', '18000000-0000-4000-9000-000000000008'),
        ('18000000-0000-4000-8000-000000000009', 'user', '18000000-0000-4000-9000-000000000009'),
        ('18000000-0000-4000-8000-00000000000a', 'user', '18000000-0000-4000-9000-00000000000a')
    ) AS a (id, kind, mutation_id);
    -- U: 1000000 deposited; P: 2000000; Q and B: 10000 each; V: a 5000 grant
    PERFORM covenant.allocate_credits(a.id, a.amount, a.source_type, 'service:billing', a.mutation_id)
    FROM (
        VALUES
        (
            '18000000-0000-4000-8000-000000000001'::uuid, 1000000::bigint, 'deposit',
            '18000000-0000-4000-9000-000000000011'::uuid
        ),
        ('18000000-0000-4000-8000-000000000003', 2000000, 'deposit', '18000000-0000-4000-9000-000000000013'),
        ('18000000-0000-4000-8000-000000000006', 10000, 'deposit', '18000000-0000-4000-9000-000000000016'),
        ('18000000-0000-4000-8000-000000000007', 10000, 'deposit', '18000000-0000-4000-9000-000000000017'),
        ('18000000-0000-4000-8000-000000000002', 5000, 'grant', '18000000-0000-4000-9000-000000000012')
    ) AS a (id, amount, source_type, mutation_id);
    -- U's reservations: 101 (finalized twice), 102 (released, then
    -- finalized), 103 (pending: overspent), 104 (the TTL), 105 (idempotency)
    PERFORM covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000001', r.amount, '1 hour', 'service:billing', r.mutation_id
    )
    FROM (
        VALUES
        (1000::bigint, '18000000-0000-4000-9000-000000000101'::uuid),
        (1000, '18000000-0000-4000-9000-000000000102'),
        (1000, '18000000-0000-4000-9000-000000000103'),
        (2000, '18000000-0000-4000-9000-000000000105')
    ) AS r (amount, mutation_id);
    PERFORM covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000001', 1000, '1 microsecond', 'service:billing',
        '18000000-0000-4000-9000-000000000104'
    );
    -- Q: a reservation made before the quarantine
    PERFORM covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000006', 1000, '1 hour', 'service:billing',
        '18000000-0000-4000-9000-000000000106'
    );
    -- U -> V: a transfer
    PERFORM covenant.transfer_credits(
        '18000000-0000-4000-8000-000000000001', '18000000-0000-4000-8000-000000000002', 1000,
        'service:billing', '18000000-0000-4000-9000-000000000121'
    );
END
$setup$;

-- INVALID_ARGUMENT (CV004): amounts that are zero, negative or missing.
SELECT pg_temp.refuses(v.stmt, 'CV004', 'INVALID_ARGUMENT: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 0, 'deposit',
            'service:billing', gen_random_uuid())$$,
        'allocate 0'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', -5, 'deposit',
            'service:billing', gen_random_uuid())$$,
        'allocate a negative amount'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', NULL, 'deposit',
            'service:billing', gen_random_uuid())$$,
        'allocate NULL'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 0, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'reserve 0'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', -100, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'reserve a negative amount'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-000000000002', 0, 'service:billing', gen_random_uuid())$$,
        'transfer 0'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-000000000002', -1, 'service:billing', gen_random_uuid())$$,
        'transfer a negative amount'
    ),
    (
        $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 0,
            '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000}]',
            'service:settlement', gen_random_uuid())$$,
        'distribute 0'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000103'), -1,
            'service:billing', gen_random_uuid())$$,
        'finalize with a negative actual'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000103'), NULL,
            'service:billing', gen_random_uuid())$$,
        'finalize with a NULL actual'
    ),
    (
        $$SELECT covenant.set_receivable_bound('18000000-0000-4000-8000-000000000007', -1,
            'service:billing', gen_random_uuid())$$,
        'a negative receivable bound'
    )
) AS v (stmt, what);

-- INVALID_ARGUMENT (CV004): actors that are neither a lower-case UUID nor
-- service:<name>, and a missing mutation id.
SELECT
    pg_temp.refuses(
        pg_catalog.format(
            $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, '1 hour',
            %s, gen_random_uuid())$$,
            coalesce(pg_catalog.quote_literal(v.actor), 'NULL')
        ),
        'CV004', 'INVALID_ARGUMENT: reserve by a malformed actor: ' || v.what
    )
FROM (
    VALUES
    (NULL, 'NULL'),
    ('bob', 'a bare name'),
    ('service:', 'service: without a name'),
    ('', 'empty'),
    ('service:Billing', 'an upper-case service name'),
    ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'an upper-case UUID'),
    (E'service:billing\n', 'a trailing newline')
) AS v (actor, what);
SELECT pg_temp.refuses(v.stmt, 'CV004', 'INVALID_ARGUMENT: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'deposit',
            'bob', gen_random_uuid())$$,
        'allocate by actor bob'
    ),
    (
        $$SELECT covenant.create_account(gen_random_uuid(), 'user', NULL, gen_random_uuid())$$,
        'create an account by a NULL actor'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-000000000002', 1, 'service:', gen_random_uuid())$$,
        'transfer by actor service:'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, '1 hour',
            'service:billing', NULL)$$,
        'reserve without a mutation id'
    ),
    (
        $$SELECT covenant.finalize_usage_report(NULL, pg_temp.res('18000000-0000-4000-9000-000000000103'), 1,
            'service:billing')$$,
        'a usage report without a jti'
    )
) AS v (stmt, what);

-- INVALID_ARGUMENT (CV004): unknown kinds and source types, bad TTLs and
-- expiries, a transfer to oneself, a bad sweep, bad reputation events.
SELECT pg_temp.refuses(v.stmt, 'CV004', 'INVALID_ARGUMENT: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.create_account(gen_random_uuid(), 'wizard', 'service:billing', gen_random_uuid())$$,
        'an unknown account kind'
    ),
    (
        $$SELECT covenant.create_account(gen_random_uuid(), 'User', 'service:billing', gen_random_uuid())$$,
        'an account kind in the wrong case'
    ),
    (
        $$SELECT covenant.create_account(gen_random_uuid(), NULL, 'service:billing', gen_random_uuid())$$,
        'a NULL account kind'
    ),
    (
        $$SELECT covenant.create_account(NULL, 'user', 'service:billing', gen_random_uuid())$$,
        'a NULL account id'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'gift',
            'service:billing', gen_random_uuid())$$,
        'an unknown source type'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'transfer',
            'service:billing', gen_random_uuid())$$,
        'transfer is not a source type allocate_credits may open'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'revenue_share',
            'service:billing', gen_random_uuid())$$,
        'revenue_share is not a source type allocate_credits may open'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, NULL,
            'service:billing', gen_random_uuid())$$,
        'a NULL source type'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'deposit',
            'service:billing', gen_random_uuid(), now() - interval '1 hour')$$,
        'a lot that expires in the past'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'deposit',
            'service:billing', gen_random_uuid(), 'infinity')$$,
        'a lot that expires at infinity'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, '0 seconds',
            'service:billing', gen_random_uuid())$$,
        'a zero TTL'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, '-1 hour',
            'service:billing', gen_random_uuid())$$,
        'a negative TTL'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, '31 days',
            'service:billing', gen_random_uuid())$$,
        'a TTL over 30 days'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 100, NULL,
            'service:billing', gen_random_uuid())$$,
        'a NULL TTL'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-000000000001', 1, 'service:billing', gen_random_uuid())$$,
        'a transfer to the same account'
    ),
    (
        $$SELECT covenant.expire_reservations(now() + interval '1 hour')$$,
        'an expiry sweep in the future'
    ),
    (
        $$SELECT covenant.expire_reservations(now(), 0)$$,
        'an expiry sweep of 0 reservations'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-000000000004', 'rumour', 5000,
            'service:router', gen_random_uuid())$$,
        'an unknown reputation event type'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-000000000004', 'quality_signal',
            10001, 'service:router', gen_random_uuid())$$,
        'an observation over 10000 basis points'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-000000000004',
            'credential_update', 5000, 'service:router', gen_random_uuid())$$,
        'an observation on an unscored event'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-000000000001', 'quality_signal',
            5000, 'service:router', gen_random_uuid())$$,
        'a reputation event for a user, not an agent'
    )
) AS v (stmt, what);

-- INVALID_ARGUMENT (CV004): malformed revenue shares.
SELECT
    pg_temp.refuses(
        pg_catalog.format(
            $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 1000, %s,
            'service:settlement', gen_random_uuid())$$,
            coalesce(pg_catalog.quote_literal(v.shares), 'NULL')
        ),
        'CV004', 'INVALID_ARGUMENT: malformed shares: ' || v.what
    )
FROM (
    VALUES
    (NULL, 'NULL'),
    ('{}', 'an object, not an array'),
    ('[]', 'an empty array'),
    ('[1]', 'a number for a share'),
    ('["18000000-0000-4000-8000-000000000009"]', 'a string for a share'),
    ('[null]', 'null for a share'),
    ('[{"account_id": "bob", "bps": 10000}]', 'an account id that is not a UUID'),
    ('[{"account_id": "18000000-0000-4000-8000-000000000009"}]', 'a share without bps'),
    ('[{"bps": 10000}]', 'a share without an account'),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": "10000"}]',
        'bps as a string'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000.5}]',
        'fractional bps'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 12000},
          {"account_id": "18000000-0000-4000-8000-00000000000a", "bps": -2000}]',
        'negative bps'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 20000},
          {"account_id": "18000000-0000-4000-8000-00000000000a", "bps": 0}]',
        'a share over 10000 bps'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000, "note": "x"}]',
        'a share with an extra key'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 5000},
          {"account_id": "18000000-0000-4000-8000-000000000009", "bps": 5000}]',
        'an account twice'
    )
) AS v (shares, what);

-- BPS_SUM_INVALID (CV016): shares that do not sum to 10000.
SELECT
    pg_temp.refuses(
        pg_catalog.format(
            $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 1000, %L,
            'service:settlement', gen_random_uuid())$$,
            v.shares
        ),
        'CV016', 'BPS_SUM_INVALID: shares summing to ' || v.what
    )
FROM (
    VALUES
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 5000},
          {"account_id": "18000000-0000-4000-8000-00000000000a", "bps": 4000}]',
        '9000'
    ),
    (
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 5000},
          {"account_id": "18000000-0000-4000-8000-00000000000a", "bps": 5001}]',
        '10001'
    ),
    ('[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 0}]', '0')
) AS v (shares, what);

-- NOT_AUTHORIZED (CV005): a person (a UUID actor) may reserve, finalize,
-- release and transfer, but not what the policy keeps for services; nobody
-- appends to an account: domain directly.
SELECT pg_temp.refuses(v.stmt, 'CV005', 'NOT_AUTHORIZED: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 100, 'deposit',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', gen_random_uuid())$$,
        'a person allocates credits'
    ),
    (
        $$SELECT covenant.create_account(gen_random_uuid(), 'user',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', gen_random_uuid())$$,
        'a person opens an account'
    ),
    (
        $$SELECT covenant.set_receivable_bound('18000000-0000-4000-8000-000000000001', NULL,
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', gen_random_uuid())$$,
        'a person sets a receivable bound'
    ),
    (
        $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 1000,
            '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000}]',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', gen_random_uuid())$$,
        'a person distributes revenue'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-000000000004', 'quality_signal',
            10000, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', gen_random_uuid())$$,
        'a person records a reputation event'
    ),
    (
        $$SELECT covenant.finalize_usage_report(gen_random_uuid(),
            pg_temp.res('18000000-0000-4000-9000-000000000103'), 1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')$$,
        'a person finalizes a usage report'
    ),
    (
        $$SELECT * FROM covenant.append_audit_entry('account:18000000-0000-4000-8000-000000000001',
            gen_random_uuid(), 'allocate_credits', 'service:billing', '{"amount_micro": "1000000000"}')$$,
        'a direct append to an account: domain'
    ),
    (
        $$SELECT * FROM covenant.append_audit_entries('account:18000000-0000-4000-8000-000000000001', '[
            {"entry_id": "18000000-0000-4000-a000-000000000001", "event_type": "allocate_credits",
             "actor_id": "service:billing", "payload": {}}]')$$,
        'a direct batch append to an account: domain'
    )
) AS v (stmt, what);

-- ACCOUNT_UNKNOWN (CV017), RESERVATION_UNKNOWN (CV014), ACCOUNT_EXISTS
-- (CV021).
SELECT pg_temp.refuses(v.stmt, v.code, v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-0000000000ff', 100, 'deposit',
            'service:billing', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: allocate to an unknown account'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-0000000000ff', 100, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: reserve on an unknown account'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-0000000000ff',
            '18000000-0000-4000-8000-000000000002', 100, 'service:billing', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: transfer from an unknown account'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-0000000000ff', 100, 'service:billing', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: transfer to an unknown account'
    ),
    (
        $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-0000000000ff', 1000,
            '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000}]',
            'service:settlement', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: distribute from an unknown account'
    ),
    (
        $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 1000,
            '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 5000},
              {"account_id": "18000000-0000-4000-8000-0000000000ff", "bps": 5000}]',
            'service:settlement', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: distribute to an unknown account'
    ),
    (
        $$SELECT covenant.set_receivable_bound('18000000-0000-4000-8000-0000000000ff', 100,
            'service:billing', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: bound an unknown account'
    ),
    (
        $$SELECT covenant.record_reputation_event('18000000-0000-4000-8000-0000000000ff', 'quality_signal',
            5000, 'service:router', gen_random_uuid())$$,
        'CV017', 'ACCOUNT_UNKNOWN: a reputation event for an unknown agent'
    ),
    (
        $$SELECT covenant.finalize_reservation('18000000-0000-4000-b000-0000000000ff', 1,
            'service:billing', gen_random_uuid())$$,
        'CV014', 'RESERVATION_UNKNOWN: finalize an unknown reservation'
    ),
    (
        $$SELECT covenant.release_reservation('18000000-0000-4000-b000-0000000000ff',
            'service:billing', gen_random_uuid())$$,
        'CV014', 'RESERVATION_UNKNOWN: release an unknown reservation'
    ),
    (
        $$SELECT covenant.finalize_usage_report(gen_random_uuid(), '18000000-0000-4000-b000-0000000000ff', 1,
            'service:billing')$$,
        'CV014', 'RESERVATION_UNKNOWN: a usage report for an unknown reservation'
    ),
    (
        $$SELECT covenant.create_account('18000000-0000-4000-8000-000000000001', 'user',
            'service:billing', gen_random_uuid())$$,
        'CV021', 'ACCOUNT_EXISTS: open an account that exists, by another mutation'
    )
) AS v (stmt, code, what);

-- INSUFFICIENT_BALANCE (CV010). U holds 1000000 - 6000 reserved - 1000
-- transferred = 993000 available.
SELECT results_eq(
    $$SELECT available, reserved FROM covenant.account_balance('18000000-0000-4000-8000-000000000001')$$,
    $$VALUES (993000::numeric, 6000::numeric)$$,
    'U has 993000 available and 6000 reserved'
);
SELECT pg_temp.refuses(v.stmt, 'CV010', 'INSUFFICIENT_BALANCE: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 993001, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'reserve 1 more than is available'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000001',
            '18000000-0000-4000-8000-000000000002', 993001, 'service:billing', gen_random_uuid())$$,
        'transfer 1 more than is available'
    ),
    (
        $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 2000001,
            '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 10000}]',
            'service:settlement', gen_random_uuid())$$,
        'distribute 1 more than is available'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000005', 1, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'reserve on an account with no lots'
    )
) AS v (stmt, what);

-- Reservations resolve once (INVALID_TRANSITION, CV013), never for more than
-- they hold (BUDGET_OVERSPEND, CV011).
SELECT lives_ok(
    $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000101'), 500,
        'service:billing', '18000000-0000-4000-9000-000000000201')$$,
    'reservation 101 is finalized'
);
SELECT lives_ok(
    $$SELECT covenant.release_reservation(pg_temp.res('18000000-0000-4000-9000-000000000102'),
        'service:billing', '18000000-0000-4000-9000-000000000202')$$,
    'reservation 102 is released'
);
SELECT pg_temp.refuses(v.stmt, v.code, v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000101'), 500,
            'service:billing', gen_random_uuid())$$,
        'CV013', 'INVALID_TRANSITION: finalize a finalized reservation'
    ),
    (
        $$SELECT covenant.release_reservation(pg_temp.res('18000000-0000-4000-9000-000000000101'),
            'service:billing', gen_random_uuid())$$,
        'CV013', 'INVALID_TRANSITION: release a finalized reservation'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000102'), 500,
            'service:billing', gen_random_uuid())$$,
        'CV013', 'INVALID_TRANSITION: finalize a released reservation'
    ),
    (
        $$SELECT covenant.release_reservation(pg_temp.res('18000000-0000-4000-9000-000000000102'),
            'service:billing', gen_random_uuid())$$,
        'CV013', 'INVALID_TRANSITION: release a released reservation'
    ),
    (
        $$SELECT covenant.finalize_usage_report(gen_random_uuid(),
            pg_temp.res('18000000-0000-4000-9000-000000000102'), 0, 'service:billing')$$,
        'CV013', 'INVALID_TRANSITION: a usage report for a released reservation'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000103'), 1001,
            'service:billing', gen_random_uuid())$$,
        'CV011', 'BUDGET_OVERSPEND: finalize 1001 of a 1000 reservation'
    ),
    (
        $$SELECT covenant.finalize_usage_report(gen_random_uuid(),
            pg_temp.res('18000000-0000-4000-9000-000000000103'), 1001, 'service:billing')$$,
        'CV011', 'BUDGET_OVERSPEND: a usage report of 1001 for a 1000 reservation'
    )
) AS v (stmt, code, what);
SELECT is(
    (
        SELECT r.status FROM covenant.credit_reservations AS r
        WHERE r.mutation_id = '18000000-0000-4000-9000-000000000103'
    ),
    'pending',
    'the overspent reservation is still pending'
);

-- Idempotency: a replay returns the first call's result and writes nothing;
-- the same mutation id for another request is IDEMPOTENCY_CONFLICT (CV002).
SELECT pg_temp.replays(
    $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2000, '1 hour',
        'service:billing', '18000000-0000-4000-9000-000000000105')$$,
    pg_temp.res('18000000-0000-4000-9000-000000000105')::text,
    'the same reserve call again returns the same reservation id'
);
SELECT pg_temp.replays(
    $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000001', 1000000, 'deposit',
        'service:billing', '18000000-0000-4000-9000-000000000011')$$,
    (
        SELECT l.lot_id::text FROM covenant.credit_lots AS l
        WHERE l.mutation_id = '18000000-0000-4000-9000-000000000011'
    ),
    'the same allocate call again returns the same lot id'
);
SELECT pg_temp.replays(
    $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000101'), 500,
        'service:billing', '18000000-0000-4000-9000-000000000201')$$,
    '',
    'the same finalize call again succeeds'
);
SELECT pg_temp.replays(
    $$SELECT covenant.create_account('18000000-0000-4000-8000-000000000001', 'user',
        'service:billing', '18000000-0000-4000-9000-000000000001')$$,
    '',
    'the same create_account call again succeeds'
);
SELECT results_eq(
    $$SELECT
        (SELECT count(*) FROM covenant.credit_reservations
         WHERE mutation_id = '18000000-0000-4000-9000-000000000105'),
        (SELECT count(*) FROM covenant.ledger_mutations
         WHERE mutation_id = '18000000-0000-4000-9000-000000000105'),
        (SELECT count(*) FROM covenant.credit_ledger
         WHERE mutation_id = '18000000-0000-4000-9000-000000000105'),
        (SELECT count(*) FROM covenant.audit_trail_chain_links
         WHERE entry_id = '18000000-0000-4000-9000-000000000105')$$,
    $$VALUES (1::bigint, 1::bigint, 1::bigint, 1::bigint)$$,
    'the replayed reservation exists once: one reservation, mutation, journal line and audit entry'
);
SELECT pg_temp.refuses(v.stmt, 'CV002', 'IDEMPOTENCY_CONFLICT: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2001, '1 hour',
            'service:billing', '18000000-0000-4000-9000-000000000105')$$,
        'the same mutation id with another amount'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2000, '2 hours',
            'service:billing', '18000000-0000-4000-9000-000000000105')$$,
        'the same mutation id with another TTL'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2000, '1 hour',
            'service:other', '18000000-0000-4000-9000-000000000105')$$,
        'the same mutation id by another actor'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2000, '1 hour',
            'service:billing', '18000000-0000-4000-9000-000000000011')$$,
        'an allocation''s mutation id reused for a reservation'
    ),
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000002', 2000, '1 hour',
            'service:billing', '18000000-0000-4000-9000-000000000105')$$,
        'the same mutation id on another account'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000101'), 499,
            'service:billing', '18000000-0000-4000-9000-000000000201')$$,
        'the same finalize mutation id with another actual'
    ),
    (
        $$SELECT covenant.create_account('18000000-0000-4000-8000-000000000001', 'platform',
            'service:billing', '18000000-0000-4000-9000-000000000001')$$,
        'the same create_account mutation id with another kind'
    )
) AS v (stmt, what);

-- USAGE_REPLAY (CV020): a usage report (jti) is redeemed once, even when
-- the very same report comes again.
SELECT lives_ok(
    $$SELECT covenant.finalize_usage_report('18000000-0000-4000-9000-000000000701',
        pg_temp.res('18000000-0000-4000-9000-000000000103'), 700, 'service:billing')$$,
    'a usage report finalizes reservation 103'
);
SELECT pg_temp.refuses(v.stmt, 'CV020', 'USAGE_REPLAY: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.finalize_usage_report('18000000-0000-4000-9000-000000000701',
            pg_temp.res('18000000-0000-4000-9000-000000000103'), 700, 'service:billing')$$,
        'the same usage report again'
    ),
    (
        $$SELECT covenant.finalize_usage_report('18000000-0000-4000-9000-000000000701',
            pg_temp.res('18000000-0000-4000-9000-000000000105'), 700, 'service:billing')$$,
        'the same jti for another reservation'
    )
) AS v (stmt, what);
SELECT results_eq(
    $$SELECT jti, actual_micro::bigint, reservation_id FROM covenant.usage_tokens$$,
    $$VALUES ('18000000-0000-4000-9000-000000000701'::uuid, 700::bigint,
              pg_temp.res('18000000-0000-4000-9000-000000000103'))$$,
    'one usage token, redeemed once'
);

-- RECEIVABLE_BOUND_EXCEEDED (CV012): B may hold at most 5000 in pending
-- reservations.
SELECT lives_ok(
    $$SELECT covenant.set_receivable_bound('18000000-0000-4000-8000-000000000007', 5000,
        'service:billing', '18000000-0000-4000-9000-000000000301')$$,
    'B gets a receivable bound of 5000'
);
SELECT isnt(
    covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000007', 3000, '1 hour', 'service:billing',
        '18000000-0000-4000-9000-000000000302'
    ),
    NULL,
    'B reserves 3000 within its bound'
);
SELECT pg_temp.refuses(
    $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000007', 2001, '1 hour',
        'service:billing', gen_random_uuid())$$,
    'CV012', 'RECEIVABLE_BOUND_EXCEEDED: 3000 + 2001 over a bound of 5000 (the balance would cover it)'
);
SELECT isnt(
    covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000007', 2000, '1 hour', 'service:billing',
        '18000000-0000-4000-9000-000000000303'
    ),
    NULL,
    'B reserves up to its bound exactly'
);
SELECT pg_temp.refuses(
    $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000007', 1, '1 hour',
        'service:billing', gen_random_uuid())$$,
    'CV012', 'RECEIVABLE_BOUND_EXCEEDED: 1 more at the bound'
);

-- RESERVATION_EXPIRED (CV015). now() is fixed for the transaction, so the
-- TTL cannot pass inside it; instead the operator moves reservation 104's
-- expiry into the past (no trigger guards expires_at).
RESET ROLE;
UPDATE covenant.credit_reservations SET expires_at = now() - interval '1 second'
WHERE mutation_id = '18000000-0000-4000-9000-000000000104';
SET LOCAL ROLE covenant_app;
SELECT pg_temp.refuses(v.stmt, v.code, v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000104'), 1,
            'service:billing', gen_random_uuid())$$,
        'CV015', 'RESERVATION_EXPIRED: finalize after the TTL'
    ),
    (
        $$SELECT covenant.release_reservation(pg_temp.res('18000000-0000-4000-9000-000000000104'),
            'service:billing', gen_random_uuid())$$,
        'CV015', 'RESERVATION_EXPIRED: release after the TTL'
    ),
    (
        $$SELECT covenant.finalize_usage_report(gen_random_uuid(),
            pg_temp.res('18000000-0000-4000-9000-000000000104'), 1, 'service:billing')$$,
        'CV015', 'RESERVATION_EXPIRED: a usage report after the TTL'
    )
) AS v (stmt, code, what);
SELECT is(
    covenant.expire_reservations(),
    1,
    'the expiry sweep expires the one overdue reservation'
);
SELECT results_eq(
    $$SELECT r.status, r.consumed_micro::bigint, r.released_micro::bigint, m.operation, m.actor_id
      FROM covenant.credit_reservations AS r
      INNER JOIN covenant.ledger_mutations AS m ON r.resolved_by = m.mutation_id
      WHERE r.mutation_id = '18000000-0000-4000-9000-000000000104'$$,
    $$VALUES ('expired', 0::bigint, 1000::bigint, 'expire_reservation', 'service:covenant.expiry')$$,
    'the swept reservation is expired in full, by the sweep''s own mutation'
);
SELECT is(
    covenant.expire_reservations(),
    0,
    'a second sweep finds nothing'
);
SELECT pg_temp.refuses(
    $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000104'), 1,
        'service:billing', gen_random_uuid())$$,
    'CV013', 'INVALID_TRANSITION: finalize an expired reservation'
);

-- AUDIT_QUARANTINE (CV001): the operator opens Q's breaker; every mutation
-- of Q is refused, and writes nothing.
RESET ROLE;
SET LOCAL ROLE covenant_migrator;
INSERT INTO covenant.audit_quarantine (domain_tag, state, opened_at, reason)
VALUES ('account:18000000-0000-4000-8000-000000000006', 'open', clock_timestamp(), 'pgTAP: opened by hand');
RESET ROLE;
SET LOCAL ROLE covenant_app;
SELECT pg_temp.refuses(v.stmt, 'CV001', 'AUDIT_QUARANTINE: ' || v.what)
FROM (
    VALUES
    (
        $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000006', 100, '1 hour',
            'service:billing', gen_random_uuid())$$,
        'reserve on a quarantined account'
    ),
    (
        $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000006', 100, 'deposit',
            'service:billing', gen_random_uuid())$$,
        'allocate to a quarantined account'
    ),
    (
        $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000106'), 100,
            'service:billing', gen_random_uuid())$$,
        'finalize a quarantined account''s reservation'
    ),
    (
        $$SELECT covenant.release_reservation(pg_temp.res('18000000-0000-4000-9000-000000000106'),
            'service:billing', gen_random_uuid())$$,
        'release a quarantined account''s reservation'
    ),
    (
        $$SELECT covenant.transfer_credits('18000000-0000-4000-8000-000000000006',
            '18000000-0000-4000-8000-000000000002', 100, 'service:billing', gen_random_uuid())$$,
        'transfer from a quarantined account'
    ),
    (
        $$SELECT covenant.set_receivable_bound('18000000-0000-4000-8000-000000000006', 100,
            'service:billing', gen_random_uuid())$$,
        'bound a quarantined account'
    )
) AS v (stmt, what);
SELECT results_eq(
    $$SELECT available, reserved, consumed, allocated
      FROM covenant.account_balance('18000000-0000-4000-8000-000000000006')$$,
    $$VALUES (9000::numeric, 1000::numeric, 0::numeric, 10000::numeric)$$,
    'the quarantined account is as it was'
);

-- A person (a UUID actor) may reserve and finalize: the policy allows any
-- authenticated actor there.
SELECT isnt(
    covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000001', 100, '1 hour', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '18000000-0000-4000-9000-000000000401'
    ),
    NULL,
    'a person reserves'
);
SELECT lives_ok(
    $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000401'), 100,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '18000000-0000-4000-9000-000000000402')$$,
    'a person finalizes'
);

-- The earliest-expiring lot is drawn first; a never-expiring lot last.
SELECT lives_ok(
    $$SELECT covenant.allocate_credits(a.id, 1000, 'deposit', 'service:billing', a.mutation_id, a.expires_at)
      FROM (VALUES
          ('18000000-0000-4000-8000-000000000008'::uuid, '18000000-0000-4000-9000-000000000501'::uuid,
           NULL::timestamptz),
          ('18000000-0000-4000-8000-000000000008', '18000000-0000-4000-9000-000000000502',
           now() + interval '10 days'),
          ('18000000-0000-4000-8000-000000000008', '18000000-0000-4000-9000-000000000503',
           now() + interval '2 days')
      ) AS a (id, mutation_id, expires_at)$$,
    'E gets three lots of 1000: never expiring, expiring in 10 days, in 2 days (in that order)'
);
SELECT isnt(
    covenant.reserve_credits(
        '18000000-0000-4000-8000-000000000008', 1500, '1 hour', 'service:billing',
        '18000000-0000-4000-9000-000000000504'
    ),
    NULL,
    'E reserves 1500'
);
SELECT results_eq(
    $$SELECT rl.draw_no, l.mutation_id, rl.amount_micro::bigint
      FROM covenant.reservation_lots AS rl
      INNER JOIN covenant.credit_lots AS l ON rl.account_id = l.account_id AND rl.lot_id = l.lot_id
      WHERE rl.reservation_id = pg_temp.res('18000000-0000-4000-9000-000000000504')
      ORDER BY rl.draw_no$$,
    $$VALUES (1, '18000000-0000-4000-9000-000000000503'::uuid, 1000::bigint),
             (2, '18000000-0000-4000-9000-000000000502'::uuid, 500::bigint)$$,
    'the reservation draws the lot expiring in 2 days, then the one in 10 days; the never-expiring one is untouched'
);
SELECT results_eq(
    $$SELECT available, reserved, consumed, allocated, expired
      FROM covenant.account_balance('18000000-0000-4000-8000-000000000008')$$,
    $$VALUES (1500::numeric, 1500::numeric, 0::numeric, 3000::numeric, 0::numeric)$$,
    'E before finalizing: 1500 available, 1500 reserved'
);

-- A partial finalization consumes in draw order and returns the rest.
SELECT lives_ok(
    $$SELECT covenant.finalize_reservation(pg_temp.res('18000000-0000-4000-9000-000000000504'), 1200,
        'service:billing', '18000000-0000-4000-9000-000000000505')$$,
    'E finalizes 1200 of 1500'
);
SELECT results_eq(
    $$SELECT available, reserved, consumed, allocated, expired
      FROM covenant.account_balance('18000000-0000-4000-8000-000000000008')$$,
    $$VALUES (1800::numeric, 0::numeric, 1200::numeric, 3000::numeric, 0::numeric)$$,
    'E after finalizing: the 300 not consumed are available again'
);
SELECT results_eq(
    $$SELECT mutation_id, balance::bigint, reserved::bigint, consumed::bigint, status
      FROM covenant.credit_lots WHERE account_id = '18000000-0000-4000-8000-000000000008'
      ORDER BY mutation_id$$,
    $$VALUES ('18000000-0000-4000-9000-000000000501'::uuid, 1000::bigint, 0::bigint, 0::bigint, 'active'),
             ('18000000-0000-4000-9000-000000000502', 800, 0, 200, 'active'),
             ('18000000-0000-4000-9000-000000000503', 0, 0, 1000, 'exhausted')$$,
    'the lot drawn first is consumed and exhausted, the second returns its remainder'
);
SELECT results_eq(
    $$SELECT j.line_no, j.entry_type, l.mutation_id, j.amount_micro::bigint
      FROM covenant.credit_ledger AS j
      INNER JOIN covenant.credit_lots AS l ON j.account_id = l.account_id AND j.lot_id = l.lot_id
      WHERE j.mutation_id = '18000000-0000-4000-9000-000000000505'
      ORDER BY j.line_no$$,
    $$VALUES (1, 'finalize', '18000000-0000-4000-9000-000000000503'::uuid, 1000::bigint),
             (2, 'finalize', '18000000-0000-4000-9000-000000000502', 200),
             (3, 'release', '18000000-0000-4000-9000-000000000502', 300)$$,
    'the journal of the finalization: 1000 and 200 consumed, 300 released'
);
SELECT results_eq(
    $$SELECT status, consumed_micro::bigint, released_micro::bigint
      FROM covenant.credit_reservations WHERE mutation_id = '18000000-0000-4000-9000-000000000504'$$,
    $$VALUES ('finalized', 1200::bigint, 300::bigint)$$,
    'the reservation splits exactly into consumed and released'
);

-- The largest-remainder split: 1000001 by 3333 / 6667 bps is
-- 333300.3333 / 666700.6667, so the one left over goes to the second.
SELECT is(
    covenant.split_by_bps(1000001, ARRAY[3333, 6667]),
    ARRAY[333300::bigint, 666701::bigint],
    'split_by_bps(1000001, {3333, 6667}) = {333300, 666701}'
);
SELECT lives_ok(
    $$SELECT covenant.distribute_revenue('18000000-0000-4000-8000-000000000003', 1000001,
        '[{"account_id": "18000000-0000-4000-8000-000000000009", "bps": 3333},
          {"account_id": "18000000-0000-4000-8000-00000000000a", "bps": 6667}]',
        'service:settlement', '18000000-0000-4000-9000-000000000601')$$,
    'P distributes 1000001 to R1 (3333 bps) and R2 (6667 bps)'
);
SELECT results_eq(
    $$SELECT account_id, original_allocation::bigint, source_type
      FROM covenant.credit_lots WHERE mutation_id = '18000000-0000-4000-9000-000000000601'
      ORDER BY account_id$$,
    $$VALUES ('18000000-0000-4000-8000-000000000009'::uuid, 333300::bigint, 'revenue_share'),
             ('18000000-0000-4000-8000-00000000000a', 666701, 'revenue_share')$$,
    'R1 receives 333300 and R2 666701'
);
SELECT results_eq(
    $$SELECT available, consumed FROM covenant.account_balance('18000000-0000-4000-8000-000000000003')$$,
    $$VALUES (999999::numeric, 1000001::numeric)$$,
    'P paid out exactly 1000001'
);

-- Reconciliation holds on this state (run as the superuser: see
-- 17_ledger_privileges.sql for covenant_app). A grant without a funded
-- treasury fails I-13 until the treasury holds it.
RESET ROLE;
SELECT results_eq(
    'SELECT invariant_id, ok, failure_code FROM covenant.reconcile()',
    $$VALUES ('I-1', TRUE, NULL::text), ('I-2', TRUE, NULL), ('I-4', TRUE, NULL), ('I-10', TRUE, NULL),
             ('I-12', TRUE, NULL), ('I-13', FALSE, 'TREASURY_INADEQUATE'), ('I-14', TRUE, NULL)$$,
    'reconcile: V''s 5000 grant is not backed by the treasury (I-13), everything else holds'
);
SET LOCAL ROLE covenant_app;
SELECT isnt(
    covenant.allocate_credits(
        '18000000-0000-4000-8000-000000000005', 5000, 'deposit', 'service:billing',
        '18000000-0000-4000-9000-000000000015'
    ),
    NULL,
    'the treasury is funded with 5000'
);
RESET ROLE;
SELECT results_eq(
    'SELECT invariant_id, ok, failure_code FROM covenant.reconcile()',
    $$VALUES ('I-1', TRUE, NULL::text), ('I-2', TRUE, NULL), ('I-4', TRUE, NULL), ('I-10', TRUE, NULL),
             ('I-12', TRUE, NULL), ('I-13', TRUE, NULL), ('I-14', TRUE, NULL)$$,
    'reconcile: every invariant holds'
);

-- A replay is recognised by comparing the stored request as jsonb; the
-- functions pin TimeZone and IntervalStyle, so the very same call from a
-- session set otherwise is still a replay (a regression test: it was
-- IDEMPOTENCY_CONFLICT).
SET LOCAL ROLE covenant_app;
DO $tz$ BEGIN PERFORM set_config('TimeZone', 'UTC', TRUE); END $tz$;
SELECT isnt(
    covenant.allocate_credits(
        '18000000-0000-4000-8000-000000000002', 1000, 'deposit', 'service:billing',
        '18000000-0000-4000-9000-000000000801', '2099-01-01 00:00:00+00'
    ),
    NULL,
    'V gets a lot expiring 2099-01-01 00:00 UTC (session TimeZone UTC)'
);
DO $tz$ BEGIN PERFORM set_config('TimeZone', 'Europe/Paris', TRUE); END $tz$;
SELECT pg_temp.replays(
    $$SELECT covenant.allocate_credits('18000000-0000-4000-8000-000000000002', 1000, 'deposit',
        'service:billing', '18000000-0000-4000-9000-000000000801', '2099-01-01 00:00:00+00')$$,
    (
        SELECT l.lot_id::text FROM covenant.credit_lots AS l
        WHERE l.mutation_id = '18000000-0000-4000-9000-000000000801'
    ),
    'the same allocate call from a session in another TimeZone replays'
);
DO $tz$ BEGIN PERFORM set_config('IntervalStyle', 'iso_8601', TRUE); END $tz$;
SELECT pg_temp.replays(
    $$SELECT covenant.reserve_credits('18000000-0000-4000-8000-000000000001', 2000, '1 hour',
        'service:billing', '18000000-0000-4000-9000-000000000105')$$,
    pg_temp.res('18000000-0000-4000-9000-000000000105')::text,
    'the same reserve call from a session with another IntervalStyle replays'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

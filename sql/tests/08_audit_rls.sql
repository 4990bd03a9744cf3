-- Row-level security of the audit trail (SPEC §2): enabled AND forced on
-- every audit table and every partition; policies for INSERT and SELECT
-- only (plus UPDATE of the head, which moves); and the FORCE + definer trap:
-- the SECURITY DEFINER append runs as the owner, which forced RLS binds too,
-- so it works only because the policies name covenant_migrator.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(14);

-- Every audit relation: the tables, and each partition of covenant.audit_trail.
CREATE TEMP VIEW audit_relations AS
SELECT
    ('covenant.' || t)::regclass AS rel,
    t IN ('audit_trail_head', 'audit_quarantine') AS is_state
FROM
    unnest(ARRAY[
        'audit_trail', 'audit_trail_chain_links', 'audit_trail_head',
        'audit_trail_checkpoints', 'audit_trail_retention', 'audit_quarantine'
    ]) AS t
UNION ALL
SELECT
    i.inhrelid::regclass AS rel,
    FALSE AS is_state
FROM pg_catalog.pg_inherits AS i
WHERE i.inhparent = 'covenant.audit_trail'::regclass;

-- Audit relations without RLS enabled and forced.
CREATE TEMP VIEW audit_relations_without_forced_rls AS
SELECT r.rel
FROM audit_relations AS r
INNER JOIN pg_catalog.pg_class AS c ON r.rel = c.oid
WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity);

-- Policies that may let anyone change or remove a row of the record: on an
-- append-only table or a partition, anything but INSERT and SELECT; on the
-- head and the quarantine state, DELETE (or ALL).
CREATE TEMP VIEW audit_policies_beyond_append AS
SELECT
    p.tablename::text AS tablename,
    p.policyname::text AS policyname,
    p.cmd
FROM pg_catalog.pg_policies AS p
INNER JOIN audit_relations AS r ON (p.schemaname || '.' || p.tablename)::regclass = r.rel
WHERE
    p.schemaname = 'covenant'
    AND (
        (NOT r.is_state AND p.cmd NOT IN ('INSERT', 'SELECT'))
        OR (r.is_state AND p.cmd IN ('DELETE', 'ALL'))
    );

SELECT is_empty(
    $$SELECT * FROM audit_relations_without_forced_rls$$,
    'RLS is enabled and forced on every audit table and every partition of covenant.audit_trail'
);
SELECT ok(
    'covenant.audit_quarantine'::regclass NOT IN (SELECT rel FROM audit_relations_without_forced_rls),
    'RLS is enabled and forced on covenant.audit_quarantine'
);
SELECT is_empty(
    'SELECT * FROM audit_policies_beyond_append',
    'audit policies are for INSERT and SELECT only (UPDATE only on the head and quarantine state)'
);
SELECT is_empty(
    $$SELECT p.tablename, p.policyname, p.cmd FROM pg_catalog.pg_policies AS p
      INNER JOIN pg_catalog.pg_inherits AS i
          ON (p.schemaname || '.' || p.tablename)::regclass = i.inhrelid
      WHERE i.inhparent = 'covenant.audit_trail'::regclass AND p.cmd <> 'SELECT'$$,
    'partitions carry SELECT policies only (inserts go through the parent and its policies)'
);
SELECT set_eq(
    $$SELECT tablename::text FROM pg_catalog.pg_policies
      WHERE schemaname = 'covenant' AND cmd = 'INSERT' AND roles = '{covenant_migrator}'$$,
    $$VALUES ('audit_trail'), ('audit_trail_chain_links'), ('audit_trail_head'),
             ('audit_trail_checkpoints'), ('audit_trail_retention'), ('audit_quarantine')$$,
    'each audit table has an INSERT policy naming covenant_migrator (the append functions'' owner), '
    || 'and only that role'
);
SELECT set_eq(
    $$SELECT tablename::text FROM pg_catalog.pg_policies
      WHERE schemaname = 'covenant' AND cmd = 'SELECT'
        AND roles @> '{covenant_app,covenant_dba,covenant_migrator}'::name []$$,
    $$VALUES ('audit_trail'), ('audit_trail_chain_links'), ('audit_trail_head'),
             ('audit_trail_checkpoints'), ('audit_trail_retention'), ('audit_quarantine')$$,
    'each audit table has a SELECT policy for covenant_app, covenant_dba and covenant_migrator'
);

-- The FORCE + definer trap: the append, a SECURITY DEFINER function owned by
-- covenant_migrator, reads the head and writes the chain as covenant_migrator.
SET LOCAL ROLE covenant_app;
SELECT
    is(
        r.seq, 1::bigint, 'covenant_app appends through the SECURITY DEFINER function under forced RLS'
    )
FROM covenant.append_audit_entry(
    'tests.rls', '08000000-0000-4000-8000-000000000001', 'rls.first', 'service:tests', '{"n": 1}'
) AS r;
SELECT results_eq(
    $$SELECT r.seq, r.previous_hash FROM covenant.append_audit_entry(
        'tests.rls', '08000000-0000-4000-8000-000000000002', 'rls.second', 'service:tests', '{"n": 2}'
    ) AS r$$,
    $$SELECT 2::bigint, l.entry_hash FROM covenant.audit_trail_chain_links AS l
      WHERE l.entry_id = '08000000-0000-4000-8000-000000000001'$$,
    'the definer sees the head through its SELECT policy: the second entry links to the first'
);
RESET ROLE;

-- Counterexamples: policies that do not name the owner.
-- FORCE binds the owner: without a SELECT policy naming it, it reads nothing.
ALTER POLICY audit_trail_select ON covenant.audit_trail TO covenant_app, covenant_dba;
SET LOCAL ROLE covenant_migrator;
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail
        WHERE domain_tag = 'tests.rls'
    ),
    0,
    'forced RLS binds the owner: with no SELECT policy naming it, covenant_migrator reads nothing'
);
RESET ROLE;
ALTER POLICY audit_trail_select ON covenant.audit_trail TO covenant_app, covenant_dba, covenant_migrator;

-- Without an INSERT policy naming the owner, the definer cannot append.
ALTER POLICY audit_chain_links_insert ON covenant.audit_trail_chain_links TO covenant_dba;
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry(
        'tests.rls', '08000000-0000-4000-8000-000000000003', 'rls.third', 'service:tests', '{}')$$,
    '42501', NULL,
    'with the INSERT policy not naming covenant_migrator, the definer append is refused by RLS'
);
RESET ROLE;
ALTER POLICY audit_chain_links_insert ON covenant.audit_trail_chain_links TO covenant_migrator;

-- Without a SELECT policy naming the owner, the definer reads no head, takes
-- seq 1 again, and the chain's unique constraints refuse the would-be fork.
ALTER POLICY audit_head_select ON covenant.audit_trail_head TO covenant_app, covenant_dba;
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry(
        'tests.rls', '08000000-0000-4000-8000-000000000003', 'rls.third', 'service:tests', '{}')$$,
    '23505', NULL,
    'with the head unreadable to the definer, the would-be fork is refused by the chain''s unique keys'
);
RESET ROLE;
ALTER POLICY audit_head_select ON covenant.audit_trail_head TO covenant_app, covenant_dba, covenant_migrator;

-- Counterexamples for the catalog checks.
SET LOCAL ROLE covenant_migrator;
CREATE TABLE covenant.audit_trail_p209912 PARTITION OF covenant.audit_trail
FOR VALUES FROM ('2099-12-01 00:00:00+00') TO ('2100-01-01 00:00:00+00');
ALTER TABLE covenant.audit_trail_retention NO FORCE ROW LEVEL SECURITY;
CREATE POLICY sneaky_delete ON covenant.audit_trail_checkpoints
FOR DELETE TO covenant_migrator USING (TRUE);
CREATE POLICY sneaky_all ON covenant.audit_trail_chain_links
FOR ALL TO covenant_migrator USING (TRUE);
CREATE POLICY sneaky_update ON covenant.audit_trail_default
FOR UPDATE TO covenant_migrator USING (TRUE);
CREATE POLICY sneaky_head_delete ON covenant.audit_trail_head
FOR DELETE TO covenant_migrator USING (TRUE);
CREATE POLICY sneaky_insert ON covenant.audit_trail_p209912
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
RESET ROLE;

SELECT set_eq(
    $$SELECT rel::text FROM audit_relations_without_forced_rls
      WHERE rel <> 'covenant.audit_quarantine'::regclass$$,
    $$VALUES ('covenant.audit_trail_p209912'), ('covenant.audit_trail_retention')$$,
    'a partition created around covenant.create_audit_partitions and NO FORCE are reported'
);
SELECT set_eq(
    'SELECT * FROM audit_policies_beyond_append',
    $$VALUES ('audit_trail_checkpoints', 'sneaky_delete', 'DELETE'),
             ('audit_trail_chain_links', 'sneaky_all', 'ALL'),
             ('audit_trail_default', 'sneaky_update', 'UPDATE'),
             ('audit_trail_head', 'sneaky_head_delete', 'DELETE')$$,
    'DELETE, ALL and UPDATE policies on append-only tables and partitions are reported'
);
SELECT set_eq(
    $$SELECT p.tablename::text, p.cmd FROM pg_catalog.pg_policies AS p
      INNER JOIN pg_catalog.pg_inherits AS i
          ON (p.schemaname || '.' || p.tablename)::regclass = i.inhrelid
      WHERE i.inhparent = 'covenant.audit_trail'::regclass AND p.cmd <> 'SELECT'$$,
    $$VALUES ('audit_trail_default', 'UPDATE'), ('audit_trail_p209912', 'INSERT')$$,
    'an INSERT or UPDATE policy on a partition is reported'
);

SELECT * FROM finish();
ROLLBACK;

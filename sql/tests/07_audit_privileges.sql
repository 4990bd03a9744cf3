-- Privileges on the audit trail, as each role (SPEC §2). covenant_app and
-- covenant_dba read the audit tables and write none of them: appends go
-- through covenant.append_audit_entry / append_audit_entries only; private
-- helpers are out of reach of both, operators' actions out of the app's.
-- The owner, covenant_migrator, is bound by the forced RLS: no UPDATE or
-- DELETE policy lets it touch a row, and TRUNCATE is refused by trigger.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(90);

-- Audit tables, and what each role may do on each (a catalog check, run
-- again at the end against counterexamples).
CREATE TEMP VIEW audit_privilege_drift AS
WITH c AS (
    SELECT
        ('covenant.' || t)::regclass AS rel,
        TRUE AS readable
    FROM
        unnest(ARRAY[
            'audit_trail', 'audit_trail_chain_links', 'audit_trail_head',
            'audit_trail_checkpoints', 'audit_trail_retention', 'audit_quarantine'
        ]) AS t
    UNION ALL
    -- partitions are read through the parent only
    SELECT
        i.inhrelid::regclass AS rel,
        FALSE AS readable
    FROM pg_catalog.pg_inherits AS i
    WHERE i.inhparent = 'covenant.audit_trail'::regclass
)

SELECT
    r.role_name,
    c.rel,
    p.priv
FROM (VALUES ('covenant_app'), ('covenant_dba')) AS r (role_name)
CROSS JOIN c
CROSS JOIN
    unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
        AS p (priv)
WHERE pg_catalog.has_table_privilege(r.role_name, c.rel, p.priv) <> (c.readable AND p.priv = 'SELECT');

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

-- What each role tries to write, per table (%1$s the table, %2$I a column).
CREATE TEMP TABLE audit_writes (tbl, col, op, stmt) AS
SELECT
    t.tbl,
    t.col,
    s.op,
    pg_catalog.format(s.stmt, 'covenant.' || t.tbl, t.col) AS stmt
FROM (
    VALUES
    ('audit_trail', 'payload'),
    ('audit_trail_chain_links', 'seq'),
    ('audit_trail_head', 'seq'),
    ('audit_trail_checkpoints', 'seq'),
    ('audit_trail_retention', 'row_count'),
    ('audit_quarantine', 'state')
) AS t (tbl, col)
CROSS JOIN (
    VALUES
    ('INSERT', 'INSERT INTO %1$s DEFAULT VALUES'),
    ('UPDATE', 'UPDATE %1$s SET %2$I = %2$I'),
    ('DELETE', 'DELETE FROM %1$s'),
    ('TRUNCATE', 'TRUNCATE %1$s')
) AS s (op, stmt);
GRANT SELECT ON audit_writes TO covenant_app, covenant_dba;

-- covenant_app: appends through the API (so every table below has rows).
SET LOCAL ROLE covenant_app;
SELECT
    is(
        r.seq, 1::bigint,
        'covenant_app appends through covenant.append_audit_entry'
    )
FROM covenant.append_audit_entry(
    'tests.privileges', '07000000-0000-4000-8000-000000000001', 'privileges.first',
    'service:tests', '{"n": 1}'
) AS r;
SELECT results_eq(
    $$SELECT seq FROM covenant.append_audit_entries('tests.privileges', '[
        {"entry_id": "07000000-0000-4000-8000-000000000002", "event_type": "privileges.batch",
         "actor_id": "service:tests", "payload": {"n": 2}},
        {"entry_id": "07000000-0000-4000-8000-000000000003", "event_type": "privileges.batch",
         "actor_id": "service:tests", "payload": {"n": 3}}
    ]')$$,
    $$VALUES (2::bigint), (3::bigint)$$,
    'covenant_app appends a batch through covenant.append_audit_entries'
);
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail
        WHERE domain_tag = 'tests.privileges'
    ),
    3,
    'covenant_app reads the entries it appended'
);

-- covenant_app: no direct write of any kind on any audit table.
SELECT
    throws_ok(
        w.stmt, '42501', NULL,
        pg_catalog.format('covenant_app: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM audit_writes AS w;
SELECT
    lives_ok(
        pg_catalog.format('SELECT count(*) FROM covenant.%I', t),
        'covenant_app can SELECT from covenant.' || t
    )
FROM unnest(ARRAY[
    'audit_trail', 'audit_trail_chain_links', 'audit_trail_head',
    'audit_trail_checkpoints', 'audit_trail_retention', 'audit_quarantine'
]) AS t;

-- covenant_app: no private helper, no operator action.
SELECT throws_ok(
    $$SELECT * FROM covenant._audit_append_many('tests.privileges',
        ARRAY['07000000-0000-4000-8000-000000000009'::uuid], ARRAY['privileges.forged'],
        ARRAY['service:tests'], ARRAY['{}'::jsonb], ARRAY[now()], TRUE)$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_append_many'
);
SELECT throws_ok(
    $$SELECT * FROM covenant._audit_verify('tests.privileges', 1)$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_verify'
);
SELECT throws_ok(
    $$SELECT covenant._audit_quarantine_set('tests.privileges', 'open', 'service:tests', 'forged')$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_quarantine_set'
);
SELECT throws_ok(
    $$SELECT covenant._audit_record_system('quarantine.closed', 'service:tests', '{}')$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_record_system'
);
SELECT throws_ok(
    $$SELECT * FROM covenant._audit_checkpoint('tests.privileges', 'service:tests', 'manual')$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_checkpoint'
);
SELECT throws_ok(
    $$SELECT covenant._audit_protect_partition('covenant.audit_trail_default')$$,
    '42501', NULL, 'covenant_app cannot execute covenant._audit_protect_partition'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_probe('tests.privileges', 'service:tests')$$,
    '42501', NULL, 'covenant_app cannot execute covenant.approve_audit_probe'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_reset('tests.privileges', 'service:tests')$$,
    '42501', NULL, 'covenant_app cannot execute covenant.approve_audit_reset'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.detach_audit_partition('audit_trail_p209901', 'service:tests')$$,
    '42501', NULL, 'covenant_app cannot execute covenant.detach_audit_partition'
);
RESET ROLE;

-- covenant_dba: reads, no direct writes either.
SET LOCAL ROLE covenant_dba;
SELECT
    throws_ok(
        w.stmt, '42501', NULL,
        pg_catalog.format('covenant_dba: %s on covenant.%s is refused', w.op, w.tbl)
    )
FROM audit_writes AS w;
SELECT
    lives_ok(
        pg_catalog.format('SELECT count(*) FROM covenant.%I', t),
        'covenant_dba can SELECT from covenant.' || t
    )
FROM unnest(ARRAY[
    'audit_trail', 'audit_trail_chain_links', 'audit_trail_head',
    'audit_trail_checkpoints', 'audit_trail_retention', 'audit_quarantine'
]) AS t;

-- covenant_dba: operators' actions are executable (each call gets past the
-- privilege check and stops at a domain error), private helpers are not.
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_probe('tests.privileges', 'service:tests')$$,
    'CV013', NULL, 'covenant_dba can execute covenant.approve_audit_probe (closed: no probe)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_reset('tests.privileges', 'service:tests')$$,
    'CV013', NULL, 'covenant_dba can execute covenant.approve_audit_reset (closed: no reset)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.detach_audit_partition('audit_trail_p209901', 'service:tests')$$,
    'CV004', NULL, 'covenant_dba can execute covenant.detach_audit_partition (no such partition)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant._audit_append_many('tests.privileges',
        ARRAY['07000000-0000-4000-8000-000000000009'::uuid], ARRAY['privileges.forged'],
        ARRAY['service:tests'], ARRAY['{}'::jsonb], ARRAY[now()], TRUE)$$,
    '42501', NULL, 'covenant_dba cannot execute covenant._audit_append_many'
);
SELECT throws_ok(
    $$SELECT covenant._audit_quarantine_set('tests.privileges', 'closed', 'service:tests', 'forged')$$,
    '42501', NULL, 'covenant_dba cannot execute covenant._audit_quarantine_set'
);
RESET ROLE;

-- covenant_migrator, the owner: forced RLS binds it too. It reads (a SELECT
-- policy names it), but no UPDATE or DELETE policy exists, so its UPDATE and
-- DELETE match no row; TRUNCATE ignores RLS and is refused by trigger.
SET LOCAL ROLE covenant_migrator;
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail
        WHERE domain_tag = 'tests.privileges'
    ),
    3,
    'covenant_migrator reads the entries'
);
WITH u AS (
    UPDATE covenant.audit_trail SET payload = '{}'
    RETURNING 1
)

SELECT
    is(
        count(*)::integer, 0,
        'covenant_migrator: UPDATE of covenant.audit_trail matches no row (no UPDATE policy)'
    )
FROM u;
WITH d AS (
    DELETE FROM covenant.audit_trail
    RETURNING 1
)

SELECT
    is(
        count(*)::integer, 0,
        'covenant_migrator: DELETE from covenant.audit_trail matches no row (no DELETE policy)'
    )
FROM d;
WITH u AS (
    UPDATE covenant.audit_trail_chain_links SET seq = seq + 100
    RETURNING 1
)

SELECT
    is(
        count(*)::integer, 0,
        'covenant_migrator: UPDATE of covenant.audit_trail_chain_links matches no row'
    )
FROM u;
WITH d AS (
    DELETE FROM covenant.audit_trail_chain_links
    RETURNING 1
)

SELECT
    is(
        count(*)::integer, 0,
        'covenant_migrator: DELETE from covenant.audit_trail_chain_links matches no row'
    )
FROM d;
SELECT throws_ok(
    'TRUNCATE covenant.audit_trail', 'CV019', NULL,
    'covenant_migrator: TRUNCATE of covenant.audit_trail is refused (AUDIT_APPEND_ONLY)'
);
SELECT throws_ok(
    'TRUNCATE covenant.audit_trail_chain_links', 'CV019', NULL,
    'covenant_migrator: TRUNCATE of covenant.audit_trail_chain_links is refused (AUDIT_APPEND_ONLY)'
);
SELECT throws_ok(
    $$INSERT INTO covenant.audit_trail_default (
        entry_id, domain_tag, seq, event_type, actor_id, payload, event_time, created_at,
        previous_hash, entry_hash
    ) VALUES (
        '07000000-0000-4000-8000-000000000008', 'tests.privileges', 4, 'privileges.forged',
        'service:tests', '{}', '2099-06-15 00:00:00+00', '2099-06-15 00:00:00+00',
        sha256(''), sha256('')
    )$$,
    '42501', NULL,
    'covenant_migrator cannot insert into a partition directly (no INSERT policy on partitions)'
);
RESET ROLE;

SELECT results_eq(
    $$SELECT seq, entry_hash FROM covenant.audit_trail
      WHERE domain_tag = 'tests.privileges' ORDER BY seq$$,
    $$SELECT seq, entry_hash FROM covenant.audit_trail_chain_links
      WHERE domain_tag = 'tests.privileges' ORDER BY seq$$,
    'after every refused write the three entries are intact'
);

-- Catalog: SELECT and nothing else on the audit tables, nothing at all on
-- partitions, no private helper executable; each shown able to fail.
SELECT is_empty(
    'SELECT * FROM audit_privilege_drift',
    'covenant_app and covenant_dba hold SELECT only on audit tables and nothing on partitions'
);
SELECT is_empty(
    'SELECT * FROM executable_private_helpers',
    'covenant_app and covenant_dba cannot execute any private helper covenant._*'
);

GRANT TRUNCATE ON covenant.audit_trail_retention TO covenant_dba;
REVOKE SELECT ON covenant.audit_quarantine FROM covenant_app;
GRANT SELECT ON covenant.audit_trail_default TO covenant_app;
GRANT EXECUTE ON FUNCTION covenant._audit_lock_key(text) TO covenant_app;
SELECT set_eq(
    'SELECT role_name, rel::text, priv FROM audit_privilege_drift',
    $$VALUES ('covenant_dba', 'covenant.audit_trail_retention', 'TRUNCATE'),
             ('covenant_app', 'covenant.audit_quarantine', 'SELECT'),
             ('covenant_app', 'covenant.audit_trail_default', 'SELECT')$$,
    'a write grant, a missing read and a grant on a partition are reported'
);
SELECT set_eq(
    'SELECT role_name, fn FROM executable_private_helpers',
    $$VALUES ('covenant_app', 'covenant._audit_lock_key(text)'::regprocedure)$$,
    'a private helper granted to covenant_app is reported'
);

SELECT * FROM finish();
ROLLBACK;

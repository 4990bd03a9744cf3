-- Append-only, for real (SPEC §2, §3.1): BEFORE UPDATE/DELETE row triggers and
-- BEFORE TRUNCATE statement triggers on the parent AND on every partition
-- (a TRUNCATE trigger on a partitioned table does not fire for TRUNCATE of a
-- partition), all ENABLE ALWAYS. Even the superuser running this file is
-- refused with AUDIT_APPEND_ONLY (CV019), also under
-- session_replication_role = replica.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(57);

-- Triggers an audit relation lacks: for each, the protection it needs
-- ('update', 'delete', 'truncate') that no BEFORE trigger calling
-- covenant._audit_refuse_change() with tgenabled = 'A' (ALWAYS) gives it.
CREATE TEMP VIEW audit_trigger_gaps AS
SELECT
    r.rel::text AS rel,
    k.kind
FROM (
    SELECT
        ('covenant.' || v.t)::regclass AS rel,
        v.append_only
    FROM (
        VALUES
        ('audit_trail', TRUE),
        ('audit_trail_chain_links', TRUE),
        ('audit_trail_checkpoints', TRUE),
        ('audit_trail_retention', TRUE),
        ('audit_trail_head', FALSE),
        ('audit_quarantine', FALSE)
    ) AS v (t, append_only)
    UNION ALL
    SELECT
        i.inhrelid::regclass AS rel,
        TRUE AS append_only
    FROM pg_catalog.pg_inherits AS i
    WHERE i.inhparent = 'covenant.audit_trail'::regclass
) AS r
CROSS JOIN (VALUES ('update'), ('delete'), ('truncate')) AS k (kind)
WHERE
    (k.kind <> 'update' OR r.append_only)
    AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_trigger AS g
        WHERE
            g.tgrelid = r.rel
            AND g.tgenabled = 'A'
            AND g.tgfoid = 'covenant._audit_refuse_change()'::regprocedure
            -- tgtype bits: 1 ROW, 2 BEFORE, 8 DELETE, 16 UPDATE, 32 TRUNCATE
            AND (g.tgtype & 2) = 2
            AND CASE k.kind
                WHEN 'update' THEN (g.tgtype & 1) = 1 AND (g.tgtype & 16) = 16
                WHEN 'delete' THEN (g.tgtype & 1) = 1 AND (g.tgtype & 8) = 8
                ELSE (g.tgtype & 1) = 0 AND (g.tgtype & 32) = 32
            END
    );

-- A partition created now, by the function the scheduler calls.
SELECT
    is(
        covenant.create_audit_partitions(h.months_ahead + 1), 1,
        'covenant.create_audit_partitions creates the next missing month'
    )
FROM covenant.audit_partition_health() AS h;

SELECT is_empty(
    'SELECT * FROM audit_trigger_gaps',
    'every audit table and every partition (DEFAULT and new ones included) has its '
    || 'ENABLE ALWAYS append-only triggers'
);
SELECT set_eq(
    $$SELECT g.tgname::text, g.tgenabled::text FROM pg_catalog.pg_trigger AS g
      WHERE g.tgrelid = ('covenant.' || (SELECT newest_partition FROM covenant.audit_partition_health()))::regclass
        AND NOT g.tgisinternal$$,
    $$VALUES ('audit_trail_append_only', 'A'), ('audit_trail_no_truncate', 'A')$$,
    'the partition created during the test has both triggers, ENABLE ALWAYS'
);
SELECT set_eq(
    $$SELECT g.tgname::text, g.tgenabled::text FROM pg_catalog.pg_trigger AS g
      WHERE g.tgrelid = 'covenant.audit_trail_default'::regclass AND NOT g.tgisinternal$$,
    $$VALUES ('audit_trail_append_only', 'A'), ('audit_trail_no_truncate', 'A')$$,
    'the DEFAULT partition has both triggers, ENABLE ALWAYS'
);

-- Rows in every protected table (row triggers fire only on rows).
SELECT results_eq(
    $$SELECT seq FROM covenant.append_audit_entries('tests.triggers', '[
        {"entry_id": "09000000-0000-4000-8000-000000000001", "event_type": "triggers.one",
         "actor_id": "service:tests", "payload": {"n": 1}},
        {"entry_id": "09000000-0000-4000-8000-000000000002", "event_type": "triggers.two",
         "actor_id": "service:tests", "payload": {"n": 2}}
    ]')$$,
    $$VALUES (1::bigint), (2::bigint)$$,
    'two entries appended'
);
SELECT
    is(
        c.created, TRUE, 'a checkpoint created'
    )
FROM covenant.create_audit_checkpoint('tests.triggers', 'service:tests') AS c;
SELECT
    is(
        f.consecutive_failures, 1, 'a quarantine row created'
    )
FROM covenant.record_audit_verification_failure('tests.triggers', 'service:tests', 'timeout') AS f;
-- The superuser bypasses RLS: a retention row and a row in the DEFAULT partition.
INSERT INTO covenant.audit_trail_retention (
    partition_name, range_from, range_to, row_count, checksum, sealed, detached_by
) VALUES (
    'audit_trail_p209901', '2099-01-01 00:00:00+00', '2099-02-01 00:00:00+00', 0,
    encode(sha256(''), 'hex'), '{}', 'service:tests'
);
INSERT INTO covenant.audit_trail (
    entry_id, domain_tag, seq, event_type, actor_id, payload, event_time, created_at,
    previous_hash, entry_hash
) VALUES (
    '09000000-0000-4000-8000-000000000099', 'tests.triggers.default', 1, 'triggers.default',
    'service:tests', '{}', '2099-06-15 00:00:00+00', '2099-06-15 00:00:00+00',
    sha256(''), sha256('')
);

-- What is tried, on what.
CREATE TEMP TABLE audit_changes (ord, stmt, description) AS
SELECT
    row_number() OVER () AS ord,
    pg_catalog.format(v.stmt, v.rel, v.col) AS stmt,
    pg_catalog.format(v.what, v.rel) AS description
FROM (
    SELECT
        t.rel,
        t.col,
        s.stmt,
        s.what
    FROM (
        SELECT
            'covenant.audit_trail' AS rel,
            'created_at' AS col
        UNION ALL
        SELECT
            min(a.tableoid::regclass::text) AS rel,
            'created_at' AS col
        FROM covenant.audit_trail AS a
        WHERE a.domain_tag = 'tests.triggers'
        UNION ALL
        SELECT
            'covenant.audit_trail_default' AS rel,
            'created_at' AS col
        UNION ALL
        SELECT
            'covenant.audit_trail_chain_links' AS rel,
            'created_at' AS col
        UNION ALL
        SELECT
            'covenant.audit_trail_checkpoints' AS rel,
            'created_at' AS col
        UNION ALL
        SELECT
            'covenant.audit_trail_retention' AS rel,
            'detached_at' AS col
    ) AS t
    CROSS JOIN (
        VALUES
        ('UPDATE %1$s SET %2$I = %2$I', 'UPDATE of %s'),
        ('DELETE FROM %s', 'DELETE from %s'),
        ('TRUNCATE %s', 'TRUNCATE of %s')
    ) AS s (stmt, what)
    UNION ALL
    SELECT
        t.rel,
        NULL AS col,
        s.stmt,
        s.what
    FROM (VALUES ('covenant.audit_trail_head'), ('covenant.audit_quarantine')) AS t (rel)
    CROSS JOIN (
        VALUES
        ('DELETE FROM %s', 'DELETE from %s'),
        ('TRUNCATE %s', 'TRUNCATE of %s')
    ) AS s (stmt, what)
) AS v;

SELECT is(
    (SELECT count(*)::integer FROM audit_changes), 22,
    'the changes tried: UPDATE, DELETE and TRUNCATE on 6 relations, DELETE and TRUNCATE on 2'
);
SELECT is(
    (SELECT count(*)::integer FROM covenant.audit_trail_default), 1,
    'the DEFAULT partition holds a row to refuse changes to'
);

-- As the superuser.
SELECT throws_ok(c.stmt, 'CV019', NULL, 'superuser: ' || c.description || ' is refused')
FROM audit_changes AS c
ORDER BY c.ord;

-- As the superuser, in replica mode (logical replication's apply, pg_restore
-- --disable-triggers): ENABLE ALWAYS triggers fire there too.
SET LOCAL session_replication_role = replica;
SELECT throws_ok(c.stmt, 'CV019', NULL, 'replica: ' || c.description || ' is refused')
FROM audit_changes AS c
ORDER BY c.ord;
SET LOCAL session_replication_role = origin;

SELECT results_eq(
    $$SELECT ok, checked FROM covenant.verify_audit_chain('tests.triggers', 1)$$,
    $$VALUES (TRUE, 2::bigint)$$,
    'after all that, the chain verifies'
);

-- Counterexamples: an ENABLE (origin-only) trigger, and a partition created
-- around covenant.create_audit_partitions (it gets the parent's cloned row
-- trigger, but no TRUNCATE trigger of its own).
ALTER TABLE covenant.audit_trail_chain_links ENABLE TRIGGER audit_chain_links_append_only;
SET LOCAL ROLE covenant_migrator;
CREATE TABLE covenant.audit_trail_p209912 PARTITION OF covenant.audit_trail
FOR VALUES FROM ('2099-12-01 00:00:00+00') TO ('2100-01-01 00:00:00+00');
RESET ROLE;
SELECT set_eq(
    'SELECT * FROM audit_trigger_gaps',
    $$VALUES ('covenant.audit_trail_chain_links', 'update'),
             ('covenant.audit_trail_chain_links', 'delete'),
             ('covenant.audit_trail_p209912', 'truncate')$$,
    'a trigger not ENABLE ALWAYS and a partition without its own TRUNCATE trigger are reported'
);
SET LOCAL session_replication_role = replica;
SELECT lives_ok(
    $$UPDATE covenant.audit_trail_chain_links SET created_at = created_at
      WHERE domain_tag = 'tests.triggers'$$,
    'why ALWAYS: in replica mode an origin-only trigger does not fire, and the UPDATE goes through'
);
SET LOCAL session_replication_role = origin;
INSERT INTO covenant.audit_trail (
    entry_id, domain_tag, seq, event_type, actor_id, payload, event_time, created_at,
    previous_hash, entry_hash
) VALUES (
    '09000000-0000-4000-8000-000000000098', 'tests.triggers.unprotected', 1, 'triggers.unprotected',
    'service:tests', '{}', '2099-12-15 00:00:00+00', '2099-12-15 00:00:00+00',
    sha256(''), sha256('')
);
SELECT lives_ok(
    'TRUNCATE covenant.audit_trail_p209912',
    'why a trigger per partition: the parent''s TRUNCATE trigger does not fire for TRUNCATE of a partition'
);

SELECT * FROM finish();
ROLLBACK;

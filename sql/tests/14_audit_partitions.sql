-- Monthly partitions of covenant.audit_trail (SPEC §3.4):
-- covenant.create_audit_partitions creates the current month and the next N,
-- idempotently; covenant.audit_partition_health() reports the months of
-- headroom, the rows in the DEFAULT partition and the newest partition.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(18);

-- The name of the partition k months after the current UTC month.
CREATE FUNCTION pg_temp.partition_of_month(k integer) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT 'audit_trail_p' || to_char(
        date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => k), 'YYYYMM'
    )
$$;

CREATE TEMP TABLE health_before AS SELECT * FROM covenant.audit_partition_health();
GRANT SELECT ON health_before TO covenant_app;

SELECT cmp_ok(
    (SELECT months_ahead FROM health_before), '>=', 2,
    'after migrate there are at least 2 months of partitions ahead'
);
SELECT is(
    (SELECT default_rows FROM health_before), 0::bigint,
    'the DEFAULT partition is empty'
);
SELECT is(
    (SELECT newest_partition FROM health_before),
    pg_temp.partition_of_month((SELECT months_ahead FROM health_before)),
    'the newest partition is the last month of the headroom'
);

-- As covenant_app (the API grants it): create the next two months, then again.
SET LOCAL ROLE covenant_app;
SELECT
    is(
        covenant.create_audit_partitions(h.months_ahead + 2), 2,
        'create_audit_partitions creates the two missing months'
    )
FROM health_before AS h;
SELECT
    is(
        covenant.create_audit_partitions(h.months_ahead + 2), 0,
        'create_audit_partitions is idempotent: the same call again creates nothing'
    )
FROM health_before AS h;
SELECT is(
    covenant.create_audit_partitions(0), 0,
    'create_audit_partitions(0) creates nothing: the current month exists'
);
SELECT results_eq(
    $$SELECT months_ahead, default_rows, newest_partition, partitions
      FROM covenant.audit_partition_health()$$,
    $$SELECT months_ahead + 2, 0::bigint, pg_temp.partition_of_month(months_ahead + 2), partitions + 2
      FROM health_before$$,
    'audit_partition_health reports two more months, two more partitions, DEFAULT still empty'
);
SELECT throws_ok(
    'SELECT covenant.create_audit_partitions(-1)', 'CV004', NULL,
    'a negative number of months is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    'SELECT covenant.create_audit_partitions(121)', 'CV004', NULL,
    'more than 120 months is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    'SELECT covenant.create_audit_partitions(NULL)', 'CV004', NULL,
    'NULL months is refused (INVALID_ARGUMENT)'
);
RESET ROLE;

-- The new partition covers its UTC month, and is protected like the others.
SET LOCAL timezone = 'UTC';
SELECT is(
    (
        SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class AS c
        WHERE c.oid = ('covenant.' || (SELECT h.newest_partition FROM covenant.audit_partition_health() AS h))::regclass
    ),
    pg_catalog.format(
        'FOR VALUES FROM (%L) TO (%L)',
        to_char(
            date_trunc('month', now() AT TIME ZONE 'UTC')
            + make_interval(months => (SELECT months_ahead + 2 FROM health_before)),
            'YYYY-MM-DD HH24:MI:SS+00'
        ),
        to_char(
            date_trunc('month', now() AT TIME ZONE 'UTC')
            + make_interval(months => (SELECT months_ahead + 3 FROM health_before)),
            'YYYY-MM-DD HH24:MI:SS+00'
        )
    ),
    'the new partition''s bounds are its UTC month'
);
RESET timezone;
SELECT results_eq(
    $$SELECT c.relrowsecurity, c.relforcerowsecurity,
             EXISTS (SELECT FROM pg_catalog.pg_trigger AS g
                     WHERE g.tgrelid = c.oid AND g.tgname = 'audit_trail_no_truncate'
                       AND g.tgenabled = 'A'),
             pg_catalog.has_table_privilege('covenant_app', c.oid, 'SELECT')
      FROM pg_catalog.pg_class AS c
      WHERE c.oid = ('covenant.' || (SELECT newest_partition FROM covenant.audit_partition_health()))::regclass$$,
    $$VALUES (TRUE, TRUE, TRUE, FALSE)$$,
    'the new partition has forced RLS, its own ENABLE ALWAYS TRUNCATE trigger, and no grant'
);

-- Counterexample: a row whose month has no partition lands in DEFAULT; health
-- reports it, and that month can no longer get a partition (it is skipped
-- with a warning, not an error).
INSERT INTO covenant.audit_trail (
    entry_id, domain_tag, seq, event_type, actor_id, payload, event_time, created_at,
    previous_hash, entry_hash
)
SELECT
    '14000000-0000-4000-8000-000000000001'::uuid AS entry_id,
    'tests.partitions' AS domain_tag,
    1 AS seq,
    'partitions.stray' AS event_type,
    'service:tests' AS actor_id,
    '{}'::jsonb AS payload,
    t.at AS event_time,
    t.at AS created_at,
    sha256('') AS previous_hash,
    sha256('') AS entry_hash
FROM (
    SELECT
        (
            date_trunc('month', now() AT TIME ZONE 'UTC')
            + make_interval(months => h.months_ahead + 4, days => 14)
        ) AT TIME ZONE 'UTC' AS at
    FROM health_before AS h
) AS t;
SELECT is(
    (SELECT default_rows FROM covenant.audit_partition_health()), 1::bigint,
    'audit_partition_health reports a row in the DEFAULT partition'
);
SET LOCAL client_min_messages = error;
SELECT
    is(
        covenant.create_audit_partitions(h.months_ahead + 4), 1,
        'the month whose row sits in DEFAULT is skipped, the month before it created'
    )
FROM health_before AS h;
RESET client_min_messages;
SELECT ok(
    to_regclass('covenant.' || pg_temp.partition_of_month((SELECT months_ahead + 4 FROM health_before)))
    IS NULL,
    'no partition was created for the month held in DEFAULT'
);
SELECT is(
    (SELECT months_ahead FROM covenant.audit_partition_health()),
    (SELECT months_ahead + 3 FROM health_before),
    'the headroom stops at the skipped month'
);

-- Counterexample: without next month's partition the headroom is 0.
DO $detach$
BEGIN
    EXECUTE format(
        'ALTER TABLE covenant.audit_trail DETACH PARTITION covenant.%I', pg_temp.partition_of_month(1)
    );
END
$detach$;
SELECT is(
    (SELECT months_ahead FROM covenant.audit_partition_health()), 0,
    'with next month''s partition detached, audit_partition_health reports 0 months ahead'
);
DO $detach$
BEGIN
    EXECUTE format(
        'ALTER TABLE covenant.audit_trail DETACH PARTITION covenant.%I', pg_temp.partition_of_month(0)
    );
END
$detach$;
SELECT is(
    (SELECT months_ahead FROM covenant.audit_partition_health()), -1,
    'with the current month''s partition detached too, it reports -1'
);

SELECT * FROM finish();
ROLLBACK;

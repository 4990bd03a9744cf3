-- Schema covenant belongs to covenant_migrator, and so does everything in it.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(9);

SELECT has_schema('covenant');
SELECT schema_owner_is('covenant', 'covenant_migrator');
SELECT is_empty(
    'SELECT * FROM tests.objects_not_owned_by_migrator()',
    'every relation, function and type in covenant is owned by covenant_migrator'
);
SELECT ok(
    NOT pg_catalog.has_schema_privilege('public', 'covenant', 'USAGE'),
    'PUBLIC has no USAGE on schema covenant'
);
SELECT ok(
    pg_catalog.has_schema_privilege('covenant_app', 'covenant', 'USAGE'),
    'covenant_app has USAGE on schema covenant'
);
SELECT ok(
    NOT pg_catalog.has_schema_privilege('covenant_app', 'covenant', 'CREATE'),
    'covenant_app has no CREATE on schema covenant'
);
SELECT ok(
    NOT pg_catalog.has_database_privilege('covenant_app', pg_catalog.current_database(), 'CREATE'),
    'covenant_app has no CREATE on the database (no new schemas)'
);

-- Counterexample: the ownership check is not vacuous.
CREATE TABLE covenant.owned_by_superuser (i integer);
SELECT results_eq(
    'SELECT * FROM tests.objects_not_owned_by_migrator()',
    $$VALUES ('relation covenant.owned_by_superuser')$$,
    'a table owned by another role is reported'
);
SELECT is(
    (
        SELECT count(*)::integer FROM pg_catalog.pg_class AS c
        INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid
        WHERE n.nspname = 'covenant' AND c.relname = 'error_codes'
    ),
    1,
    'the error-code catalogue is installed'
);

SELECT * FROM finish();
ROLLBACK;

-- Schema public grants PUBLIC no CREATE (the PostgreSQL 14 default, which
-- survives pg_upgrade, is revoked by the bootstrap).
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(4);

SELECT ok(
    NOT pg_catalog.has_schema_privilege('public', 'public', 'CREATE'),
    'PUBLIC has no CREATE on schema public'
);
SELECT ok(
    NOT pg_catalog.has_schema_privilege('covenant_app', 'public', 'CREATE'),
    'covenant_app has no CREATE on schema public'
);

SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    'CREATE TABLE public.squatter (i integer)', '42501', NULL,
    'covenant_app cannot create a table in public'
);
SELECT throws_ok(
    $$CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT NULL::timestamptz'$$,
    '42501', NULL,
    'covenant_app cannot plant a function in public to shadow a built-in'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

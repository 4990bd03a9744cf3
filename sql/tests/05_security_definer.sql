-- Every SECURITY DEFINER function in covenant pins search_path to
-- "pg_catalog, pg_temp" (or empty). The check reads the catalog, so it keeps
-- holding for every function later sections add.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(5);

SELECT is_empty(
    'SELECT * FROM tests.insecure_definer_functions()',
    'every SECURITY DEFINER function in covenant pins search_path'
);

-- Counterexamples: the check catches a definer function without a pinned
-- search_path and one pinned to a schema an attacker could write to.
SET LOCAL ROLE covenant_migrator;
CREATE FUNCTION covenant.bad_unpinned() RETURNS integer
LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
CREATE FUNCTION covenant.bad_public_path() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_catalog AS 'SELECT 1';
CREATE FUNCTION covenant.good_pinned() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT 1';
CREATE FUNCTION covenant.good_empty() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = '' AS 'SELECT 1';
RESET ROLE;

SELECT set_eq(
    'SELECT * FROM tests.insecure_definer_functions()',
    $$VALUES ('covenant.bad_unpinned()'::regprocedure),
             ('covenant.bad_public_path()'::regprocedure)$$,
    'unpinned and public-path definer functions are reported, pinned ones are not'
);
SELECT ok(
    'covenant.good_pinned()'::regprocedure NOT IN (SELECT * FROM tests.insecure_definer_functions()),
    'search_path = pg_catalog, pg_temp is accepted'
);
SELECT ok(
    'covenant.good_empty()'::regprocedure NOT IN (SELECT * FROM tests.insecure_definer_functions()),
    'an empty search_path is accepted'
);
SELECT ok(
    NOT EXISTS (
        SELECT FROM pg_catalog.pg_proc AS p
        INNER JOIN pg_catalog.pg_namespace AS n ON p.pronamespace = n.oid
        WHERE
            n.nspname = 'covenant' AND p.prosecdef
            AND pg_catalog.pg_get_userbyid(p.proowner) <> 'covenant_migrator'
    ),
    'every SECURITY DEFINER function runs as covenant_migrator (no superuser-owned definers)'
);

SELECT * FROM finish();
ROLLBACK;

-- No function in covenant is executable by PUBLIC, now or when added later.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(7);

SELECT is_empty(
    'SELECT * FROM tests.public_executable_functions()',
    'no function in schema covenant is executable by PUBLIC'
);

-- The default privileges of covenant_migrator revoke EXECUTE from PUBLIC
-- in every schema, so a function added by any later migration starts private.
SELECT ok(
    EXISTS (
        SELECT FROM pg_catalog.pg_default_acl AS d
        WHERE
            d.defaclrole = 'covenant_migrator'::regrole
            AND d.defaclnamespace = 0
            AND d.defaclobjtype = 'f'
            AND NOT EXISTS (
                SELECT FROM aclexplode(d.defaclacl) AS a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
            )
    ),
    'default privileges of covenant_migrator grant PUBLIC no EXECUTE on functions'
);

SET LOCAL ROLE covenant_migrator;
CREATE FUNCTION covenant.added_later() RETURNS integer LANGUAGE sql AS 'SELECT 1';
RESET ROLE;
SELECT ok(
    NOT pg_catalog.has_function_privilege('public', 'covenant.added_later()', 'EXECUTE'),
    'a function created later by covenant_migrator is not executable by PUBLIC'
);
SELECT is_empty(
    'SELECT * FROM tests.public_executable_functions()',
    'still nothing executable by PUBLIC after adding a function'
);

-- Counterexample: an explicit grant is caught by the catalog check.
GRANT EXECUTE ON FUNCTION covenant.added_later() TO PUBLIC;
SELECT results_eq(
    'SELECT * FROM tests.public_executable_functions()',
    $$VALUES ('covenant.added_later()'::regprocedure)$$,
    'a function granted to PUBLIC is reported'
);

-- Private helpers are not callable by the app role.
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT covenant._raise('INVALID_ARGUMENT', 'x')$$, '42501', NULL,
    'covenant_app cannot execute the private helper covenant._raise'
);
RESET ROLE;

-- And the helper raises the catalogued SQLSTATE.
SELECT throws_ok(
    $$SELECT covenant._raise('ACCOUNT_UNKNOWN', 'no such account')$$, 'CV017', NULL,
    'covenant._raise raises the code catalogued for the name'
);

SELECT * FROM finish();
ROLLBACK;

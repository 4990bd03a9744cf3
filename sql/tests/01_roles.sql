-- The three covenant roles exist with the attributes of docs/security.md.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(21);

SELECT has_role('covenant_migrator');
SELECT has_role('covenant_app');
SELECT has_role('covenant_dba');

SELECT is(
    (
        SELECT rolcanlogin FROM pg_catalog.pg_roles
        WHERE rolname = r
    ), FALSE, r || ' is NOLOGIN'
) FROM unnest(ARRAY['covenant_migrator', 'covenant_app', 'covenant_dba']) AS r;

SELECT isnt_superuser(r) FROM unnest(ARRAY['covenant_migrator', 'covenant_app', 'covenant_dba']) AS r;

SELECT is(
    (
        SELECT rolbypassrls FROM pg_catalog.pg_roles
        WHERE rolname = r
    ), FALSE, r || ' is NOBYPASSRLS'
) FROM unnest(ARRAY['covenant_migrator', 'covenant_app', 'covenant_dba']) AS r;

SELECT is(
    (
        SELECT rolcreaterole OR rolcreatedb OR rolreplication FROM pg_catalog.pg_roles
        WHERE rolname = r
    ),
    FALSE, r || ' has no CREATEROLE, CREATEDB or REPLICATION'
) FROM unnest(ARRAY['covenant_migrator', 'covenant_app', 'covenant_dba']) AS r;

-- No covenant role is a member of another: app and dba cannot SET ROLE to
-- the owner, and the owner cannot act as the others.
SELECT ok(
    NOT pg_catalog.pg_has_role('covenant_app', 'covenant_migrator', 'MEMBER'),
    'covenant_app is not a member of covenant_migrator'
);
SELECT ok(
    NOT pg_catalog.pg_has_role('covenant_dba', 'covenant_migrator', 'MEMBER'),
    'covenant_dba is not a member of covenant_migrator'
);
SELECT ok(
    NOT pg_catalog.pg_has_role('covenant_app', 'covenant_dba', 'MEMBER'),
    'covenant_app is not a member of covenant_dba'
);

-- As the app role: it cannot change any role.
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    'ALTER ROLE covenant_app SUPERUSER', '42501', NULL, 'covenant_app cannot make itself superuser'
);
SELECT throws_ok(
    'GRANT covenant_migrator TO covenant_app', '42501', NULL,
    'covenant_app cannot grant itself the owner role'
);
SELECT throws_ok(
    'CREATE ROLE covenant_intruder', '42501', NULL, 'covenant_app cannot create roles'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

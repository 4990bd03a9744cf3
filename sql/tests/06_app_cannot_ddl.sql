-- covenant_app cannot create, alter, drop or grant anything, nor write any
-- covenant table directly.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(16);

SELECT is_empty(
    $$SELECT * FROM tests.writable_tables('covenant_app')$$,
    'covenant_app holds no INSERT/UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER on covenant tables'
);

SET LOCAL ROLE covenant_app;

SELECT throws_ok(
    'CREATE TABLE covenant.t (i integer)', '42501', NULL,
    'no CREATE TABLE in covenant'
);
SELECT throws_ok(
    $$CREATE FUNCTION covenant.f() RETURNS integer LANGUAGE sql AS 'SELECT 1'$$,
    '42501', NULL, 'no CREATE FUNCTION in covenant'
);
SELECT throws_ok(
    'CREATE VIEW covenant.v AS SELECT 1 AS one', '42501', NULL,
    'no CREATE VIEW in covenant'
);
SELECT throws_ok('CREATE SCHEMA intruder', '42501', NULL, 'no CREATE SCHEMA');
SELECT throws_ok(
    'ALTER TABLE covenant.error_codes ADD COLUMN x integer', '42501', NULL,
    'no ALTER TABLE'
);
SELECT throws_ok('ALTER SCHEMA covenant RENAME TO gone', '42501', NULL, 'no ALTER SCHEMA');
SELECT throws_ok(
    $$ALTER FUNCTION covenant._raise(text, text, text, text) SECURITY DEFINER$$,
    '42501', NULL, 'no ALTER FUNCTION'
);
SELECT throws_ok('DROP TABLE covenant.error_codes', '42501', NULL, 'no DROP TABLE');
SELECT throws_ok('DROP SCHEMA covenant CASCADE', '42501', NULL, 'no DROP SCHEMA');
SELECT throws_ok(
    $$COMMENT ON TABLE covenant.error_codes IS 'mine'$$, '42501', NULL,
    'no COMMENT (ownership)'
);
SELECT throws_ok(
    $$INSERT INTO covenant.error_codes VALUES ('CV999', 'X', 'x', FALSE, 400)$$,
    '42501', NULL, 'no INSERT'
);
SELECT throws_ok('DELETE FROM covenant.error_codes', '42501', NULL, 'no DELETE');
SELECT throws_ok('TRUNCATE covenant.error_codes', '42501', NULL, 'no TRUNCATE');

-- GRANT of a privilege held without grant option only warns: prove that it
-- granted nothing. (The warnings are expected; keep them out of the output.)
SET LOCAL client_min_messages = error;
GRANT SELECT ON covenant.error_codes TO PUBLIC;
GRANT USAGE ON SCHEMA covenant TO PUBLIC;
RESET ROLE;
SELECT ok(
    NOT pg_catalog.has_table_privilege('public', 'covenant.error_codes', 'SELECT'),
    'GRANT by covenant_app passed nothing on to PUBLIC (table)'
);
SELECT ok(
    NOT pg_catalog.has_schema_privilege('public', 'covenant', 'USAGE'),
    'GRANT by covenant_app passed nothing on to PUBLIC (schema)'
);

SELECT * FROM finish();
ROLLBACK;

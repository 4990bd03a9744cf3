-- The DDL guard: where a superuser installed covenant, event triggers refuse
-- DDL on covenant's objects outside `covenant migrate` and covenant's own
-- functions, for the superuser and for covenant_migrator alike (CV005).
BEGIN;
SELECT plan(20);

SELECT is(
    (
        SELECT count(*)::integer FROM pg_catalog.pg_event_trigger
        WHERE evtname IN ('covenant_ddl_guard', 'covenant_drop_guard') AND evtenabled = 'O'
    ),
    2,
    'both event triggers are installed and enabled'
);
SELECT is(
    coalesce(current_setting('covenant.ddl', TRUE), ''), '',
    'this transaction is not marked as the migration runner'
);

-- As the superuser (the test connection).
SELECT throws_ok(
    'CREATE TABLE covenant.sneaky (i integer)', 'CV005', NULL,
    'CREATE TABLE in covenant is refused outside the runner'
);
SELECT throws_ok(
    'ALTER TABLE covenant.audit_trail DISABLE TRIGGER audit_trail_append_only', 'CV005', NULL,
    'disabling an append-only trigger is refused'
);
SELECT throws_ok(
    'ALTER TABLE covenant.audit_trail DETACH PARTITION covenant.audit_trail_default', 'CV005', NULL,
    'DETACH PARTITION (to edit a partition and re-attach it) is refused'
);
SELECT throws_ok(
    'DROP TABLE covenant.audit_trail_retention', 'CV005', NULL, 'DROP TABLE is refused (sql_drop)'
);
SELECT throws_ok(
    'DROP FUNCTION covenant._raise(text, text, text, text)', 'CV005', NULL,
    'DROP FUNCTION is refused'
);

-- As the owner role.
SET LOCAL ROLE covenant_migrator;
SELECT throws_ok(
    'ALTER TABLE covenant.audit_trail_chain_links DISABLE TRIGGER audit_chain_links_append_only',
    'CV005', NULL, 'covenant_migrator cannot disable a trigger outside the runner'
);
SELECT throws_ok(
    $$CREATE OR REPLACE FUNCTION covenant._raise(p_name text, p_message text,
      p_detail text DEFAULT NULL, p_hint text DEFAULT NULL) RETURNS void
      LANGUAGE sql AS 'SELECT NULL'$$,
    'CV005', NULL, 'covenant_migrator cannot replace a function outside the runner'
);
RESET ROLE;

-- Other schemas are not guarded; covenant's own functions pass and restore.
SELECT lives_ok(
    'CREATE TEMP TABLE scratch (i integer)', 'DDL outside covenant is not guarded'
);
SET LOCAL ROLE covenant_app;
SELECT lives_ok(
    'CREATE TEMP TABLE app_scratch (i integer)',
    'the guard fires for covenant_app''s DDL too, and lets its temporary tables be'
);
RESET ROLE;
SELECT throws_ok(
    'CREATE POLICY sneaky ON covenant.audit_quarantine FOR UPDATE TO covenant_app USING (TRUE)',
    'CV005', NULL, 'a policy on a covenant table is guarded (its identity names the table)'
);
SELECT throws_ok(
    'ALTER POLICY audit_quarantine_select ON covenant.audit_quarantine TO covenant_app',
    'CV005', NULL, 'altering a covenant policy is refused'
);
SELECT throws_ok(
    $$CREATE TRIGGER sneaky BEFORE INSERT ON covenant.audit_trail_head
      FOR EACH ROW EXECUTE FUNCTION covenant._audit_refuse_change()$$,
    'CV005', NULL, 'a trigger on a covenant table is guarded'
);
SELECT lives_ok(
    'SELECT covenant.create_audit_partitions(5)',
    'create_audit_partitions passes the guard (it marks its own DDL)'
);
SELECT is(
    coalesce(current_setting('covenant.ddl', TRUE), ''), '',
    'and restores the caller''s setting afterwards'
);

SELECT throws_ok(
    $$CREATE TABLE public.foreign_partition PARTITION OF covenant.audit_trail
      FOR VALUES FROM ('2099-01-01 00:00:00+00') TO ('2099-02-01 00:00:00+00')$$,
    'CV005', NULL, 'a partition of a covenant table created in another schema is guarded'
);
SELECT throws_ok(
    'CREATE TABLE public.child () INHERITS (covenant.audit_quarantine)',
    'CV005', NULL, 'a child of a covenant table created in another schema is guarded'
);
SET LOCAL ROLE covenant_migrator;
SELECT throws_ok(
    'ALTER DEFAULT PRIVILEGES FOR ROLE covenant_migrator GRANT EXECUTE ON FUNCTIONS TO PUBLIC',
    'CV005', NULL, 'default privileges cannot let PUBLIC in on the owner''s new functions'
);
RESET ROLE;

-- The runner's mark lets DDL through.
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'migrate', TRUE); END $mark$;
SELECT lives_ok(
    'CREATE TABLE covenant.allowed_in_a_migration (i integer)',
    'with the runner''s mark, DDL passes'
);

SELECT * FROM finish();
ROLLBACK;

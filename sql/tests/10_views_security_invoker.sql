-- Every view in schema covenant is security_invoker (SPEC §2): it reads with
-- the reader's privileges and policies, not its owner's. The check reads
-- pg_class.reloptions, so it keeps holding for every view added later.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(8);

SELECT is_empty(
    'SELECT * FROM tests.views_without_security_invoker()',
    'every view in schema covenant is security_invoker'
);
SELECT ok(
    EXISTS (
        SELECT FROM pg_catalog.pg_class AS c
        WHERE
            c.oid = 'covenant.audit_domains'::regclass
            AND 'security_invoker=true' = any(c.reloptions)
    ),
    'covenant.audit_domains is created WITH (security_invoker = true)'
);

-- Counterexamples: no option, the option off; spellings of "on" are accepted.
SET LOCAL ROLE covenant_migrator;
CREATE VIEW covenant.v_owner_rights AS SELECT 1 AS one;
CREATE VIEW covenant.v_invoker_off WITH (security_invoker = FALSE) AS SELECT 1 AS one;
CREATE VIEW covenant.v_invoker_on WITH (security_invoker = on) AS SELECT 1 AS one;
CREATE VIEW covenant.v_invoker_bare WITH (security_invoker) AS SELECT 1 AS one;
RESET ROLE;
SELECT set_eq(
    'SELECT * FROM tests.views_without_security_invoker()',
    $$VALUES ('covenant.v_owner_rights'::regclass), ('covenant.v_invoker_off'::regclass)$$,
    'views without security_invoker, or with it off, are reported; "on" and a bare option are not'
);

-- Why it matters: a table only its owner may read, behind two views.
SET LOCAL ROLE covenant_migrator;
CREATE TABLE covenant.owner_only_secret (secret text);
INSERT INTO covenant.owner_only_secret VALUES ('s3cr3t');
CREATE VIEW covenant.secret_as_owner AS SELECT secret FROM covenant.owner_only_secret;
CREATE VIEW covenant.secret_as_invoker WITH (security_invoker = TRUE) AS
SELECT secret FROM covenant.owner_only_secret;
GRANT SELECT ON covenant.secret_as_owner, covenant.secret_as_invoker TO covenant_app;
RESET ROLE;
SET LOCAL ROLE covenant_app;
SELECT is(
    (SELECT secret FROM covenant.secret_as_owner), 's3cr3t',
    'a view without security_invoker hands covenant_app what only its owner may read'
);
SELECT throws_ok(
    'SELECT secret FROM covenant.secret_as_invoker', '42501', NULL,
    'a security_invoker view checks covenant_app''s own privileges'
);

-- covenant.audit_domains applies the reader's RLS policies.
SELECT
    is(
        r.seq, 1::bigint, 'an entry appended'
    )
FROM covenant.append_audit_entry(
    'tests.views', '10000000-0000-4000-8000-000000000001', 'views.one', 'service:tests', '{}'
) AS r;
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_domains
        WHERE domain_tag = 'tests.views'
    ),
    1,
    'covenant_app reads its domain through covenant.audit_domains'
);
RESET ROLE;
ALTER POLICY audit_head_select ON covenant.audit_trail_head TO covenant_dba, covenant_migrator;
SET LOCAL ROLE covenant_app;
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_domains
        WHERE domain_tag = 'tests.views'
    ),
    0,
    'with no head policy for covenant_app, covenant.audit_domains shows it nothing (the reader''s RLS)'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

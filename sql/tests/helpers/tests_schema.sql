-- Test helpers for the pgTAP suite: installed into the test database by the
-- test runner (scripts/test.sh), never by `covenant migrate`.
-- Each helper is a catalog query that later sections keep relying on, so the
-- invariants hold for every function and table added after this one.

CREATE SCHEMA IF NOT EXISTS tests;
GRANT USAGE ON SCHEMA tests TO PUBLIC;

-- SECURITY DEFINER functions in schema covenant whose search_path is not
-- pinned to exactly "pg_catalog, pg_temp" (or empty).
CREATE OR REPLACE FUNCTION tests.insecure_definer_functions()
RETURNS SETOF regprocedure
LANGUAGE sql STABLE
AS $$
    SELECT p.oid::regprocedure
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = 'covenant'
      AND p.prosecdef
      AND NOT EXISTS (
          SELECT FROM unnest(coalesce(p.proconfig, '{}')) AS cfg
          WHERE replace(replace(cfg, ' ', ''), '"', '') IN (
              'search_path=pg_catalog,pg_temp', 'search_path='
          )
      )
$$;

-- Functions in schema covenant that PUBLIC may execute (a NULL proacl means
-- the built-in default, which grants EXECUTE to PUBLIC).
CREATE OR REPLACE FUNCTION tests.public_executable_functions()
RETURNS SETOF regprocedure
LANGUAGE sql STABLE
AS $$
    SELECT p.oid::regprocedure
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = 'covenant'
      AND EXISTS (
          SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
      )
$$;

-- Objects in schema covenant not owned by covenant_migrator.
CREATE OR REPLACE FUNCTION tests.objects_not_owned_by_migrator()
RETURNS SETOF text
LANGUAGE sql STABLE
AS $$
    SELECT 'relation ' || c.oid::regclass::text
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'covenant'
      AND pg_catalog.pg_get_userbyid(c.relowner) <> 'covenant_migrator'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = 'covenant'
      AND pg_catalog.pg_get_userbyid(p.proowner) <> 'covenant_migrator'
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text
    FROM pg_catalog.pg_type AS t
    JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
    WHERE n.nspname = 'covenant'
      AND pg_catalog.pg_get_userbyid(t.typowner) <> 'covenant_migrator'
      -- array types and tables' row types follow their element or table
      AND t.typcategory <> 'A'
      AND t.typrelid = 0
$$;

-- Tables in schema covenant on which a role holds a write privilege.
CREATE OR REPLACE FUNCTION tests.writable_tables(p_role name)
RETURNS SETOF text
LANGUAGE sql STABLE
AS $$
    SELECT c.oid::regclass::text || ':' || priv
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
        AS priv
    WHERE n.nspname = 'covenant'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND pg_catalog.has_table_privilege(p_role, c.oid, priv)
$$;

-- Views in schema covenant that do not run with the reader's privileges
-- (no security_invoker option, or one set to false): such a view reads as
-- its owner, covenant_migrator, around the reader's grants and policies.
CREATE OR REPLACE FUNCTION tests.views_without_security_invoker()
RETURNS SETOF regclass
LANGUAGE sql STABLE
AS $$
    SELECT c.oid::regclass
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'covenant'
      AND c.relkind = 'v'
      AND NOT EXISTS (
          SELECT FROM pg_catalog.pg_options_to_table(c.reloptions) AS o
          WHERE o.option_name = 'security_invoker' AND o.option_value::boolean
      )
$$;

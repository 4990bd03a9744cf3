-- Grants of the role model (docs/security.md). Re-applied with every change
-- to sql/, after functions and triggers, so it always matches them.

-- Schema: the runtime and break-glass roles may look names up; only the
-- owner (covenant_migrator) may create in it.
REVOKE ALL ON SCHEMA covenant FROM PUBLIC;
GRANT USAGE ON SCHEMA covenant TO covenant_app, covenant_dba;

-- Functions: nothing is executable by PUBLIC; covenant_app gets EXECUTE on
-- the public API only, function by function (later sections add theirs).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA covenant FROM PUBLIC;

-- Tables: reads where allowed, never writes (governed tables are written by
-- SECURITY DEFINER functions only).
REVOKE ALL ON ALL TABLES IN SCHEMA covenant FROM PUBLIC;
GRANT SELECT ON covenant.error_codes TO covenant_app, covenant_dba;
GRANT SELECT ON covenant.schema_migrations TO covenant_dba;
GRANT SELECT ON covenant.schema_repeatables TO covenant_dba;

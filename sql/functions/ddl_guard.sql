-- The DDL guard (docs/security.md): where a superuser installed covenant,
-- event triggers call this on ddl_command_end and sql_drop and refuse any
-- DDL on covenant's objects that does not come from `covenant migrate` or
-- from covenant's own functions (partitions, retention). Both mark their
-- transaction with the setting covenant.ddl; the functions restore it.
--
-- What it is and is not: it stops DDL by anyone who could otherwise run it
-- (members of covenant_migrator, superusers) when done by hand or by another
-- tool — e.g. ALTER TABLE ... DETACH PARTITION to edit a partition and put it
-- back. A superuser or a migrator login that sets covenant.ddl itself gets
-- past it, as the runner does; verification is what catches a changed record.
-- Covered: objects in covenant and covenant_ext, the schemas, the policies,
-- triggers and rules on covenant's tables, tables elsewhere made partitions
-- or children of covenant's, and default privileges that would let PUBLIC in
-- on covenant_migrator's new objects. Not covered: GRANT and REVOKE (the
-- event-trigger API does not name their objects).
--
-- It raises CV005 directly rather than through covenant._raise: the
-- statement it judges may be dropping covenant.error_codes or replacing
-- covenant._raise itself.
-- Is this object covenant's? Objects in its schemas, the schemas themselves,
-- and the policies, triggers and rules of its tables (which have no schema of
-- their own: their identity reads "name on covenant.table").
-- Tables elsewhere that are partitions or children of a covenant table
-- count as covenant's too (p_relid: the table's oid, when it is one).
CREATE OR REPLACE FUNCTION covenant._ddl_guarded(
    p_type text, p_schema text, p_identity text, p_relid oid DEFAULT NULL
)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT coalesce(p_schema IN ('covenant', 'covenant_ext'), FALSE)
        OR (p_type = 'schema' AND p_identity IN ('covenant', 'covenant_ext'))
        OR coalesce(p_identity ~ ' on (covenant|covenant_ext)\.', FALSE)
        OR EXISTS (
            SELECT FROM pg_catalog.pg_inherits AS i
            JOIN pg_catalog.pg_class AS c ON c.oid = i.inhparent
            JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            WHERE i.inhrelid = p_relid AND n.nspname IN ('covenant', 'covenant_ext')
        )
$$;

-- SECURITY DEFINER: it fires for everyone's DDL (covenant_app's temporary
-- tables included), and must reach covenant._ddl_guarded whoever that is.
CREATE OR REPLACE FUNCTION covenant._ddl_guard()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_obj record;
BEGIN
    IF coalesce(pg_catalog.current_setting('covenant.ddl', TRUE), '') <> '' THEN
        RETURN;
    END IF;
    IF tg_event = 'sql_drop' THEN
        FOR v_obj IN
            SELECT d.object_type, d.schema_name, d.object_identity
            FROM pg_catalog.pg_event_trigger_dropped_objects() AS d
        LOOP
            IF covenant._ddl_guarded(v_obj.object_type, v_obj.schema_name, v_obj.object_identity) THEN
                RAISE EXCEPTION 'NOT_AUTHORIZED: % of % % outside covenant migrate',
                    tg_tag, v_obj.object_type, v_obj.object_identity
                    USING ERRCODE = 'CV005',
                          HINT = 'covenant''s schema changes only through a migration';
            END IF;
        END LOOP;
        RETURN;
    END IF;
    FOR v_obj IN
        SELECT
            c.object_type, c.schema_name, c.object_identity, c.command_tag,
            CASE WHEN c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass THEN c.objid END AS relid
        FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
    LOOP
        -- the owner's default privileges must keep PUBLIC from executing its
        -- new functions (migration 0001); granting it back removes the row,
        -- since EXECUTE for PUBLIC is the built-in default
        IF v_obj.command_tag = 'ALTER DEFAULT PRIVILEGES' AND NOT EXISTS (
            SELECT FROM pg_catalog.pg_default_acl AS d
            WHERE d.defaclrole = 'covenant_migrator'::pg_catalog.regrole
              AND d.defaclnamespace = 0 AND d.defaclobjtype = 'f'
              AND NOT EXISTS (
                  SELECT FROM pg_catalog.aclexplode(d.defaclacl) AS a WHERE a.grantee = 0
              )
        ) THEN
            RAISE EXCEPTION 'NOT_AUTHORIZED: ALTER DEFAULT PRIVILEGES would grant PUBLIC rights on '
                'covenant_migrator''s new objects'
                USING ERRCODE = 'CV005',
                      HINT = 'covenant''s schema changes only through a migration';
        END IF;
        IF covenant._ddl_guarded(
            v_obj.object_type, v_obj.schema_name, v_obj.object_identity, v_obj.relid
        ) THEN
            RAISE EXCEPTION 'NOT_AUTHORIZED: % on % % outside covenant migrate',
                v_obj.command_tag, v_obj.object_type, v_obj.object_identity
                USING ERRCODE = 'CV005',
                      HINT = 'covenant''s schema changes only through a migration';
        END IF;
    END LOOP;
END;
$$;

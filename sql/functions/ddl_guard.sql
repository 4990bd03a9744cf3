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
-- Covered: objects in covenant and covenant_ext, the schemas, and the
-- policies, triggers and rules on covenant's tables. Not covered: GRANT and
-- REVOKE (the event-trigger API does not name their objects).
--
-- It raises CV005 directly rather than through covenant._raise: the
-- statement it judges may be dropping covenant.error_codes or replacing
-- covenant._raise itself.
-- Is this object covenant's? Objects in its schemas, the schemas themselves,
-- and the policies, triggers and rules of its tables (which have no schema of
-- their own: their identity reads "name on covenant.table").
CREATE OR REPLACE FUNCTION covenant._ddl_guarded(p_type text, p_schema text, p_identity text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT coalesce(p_schema IN ('covenant', 'covenant_ext'), FALSE)
        OR (p_type = 'schema' AND p_identity IN ('covenant', 'covenant_ext'))
        OR coalesce(p_identity ~ ' on (covenant|covenant_ext)\.', FALSE)
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
        SELECT c.object_type, c.schema_name, c.object_identity, c.command_tag
        FROM pg_catalog.pg_event_trigger_ddl_commands() AS c
    LOOP
        IF covenant._ddl_guarded(v_obj.object_type, v_obj.schema_name, v_obj.object_identity) THEN
            RAISE EXCEPTION 'NOT_AUTHORIZED: % on % % outside covenant migrate',
                v_obj.command_tag, v_obj.object_type, v_obj.object_identity
                USING ERRCODE = 'CV005',
                      HINT = 'covenant''s schema changes only through a migration';
        END IF;
    END LOOP;
END;
$$;

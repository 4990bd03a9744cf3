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
-- GRANT and REVOKE are not covered: the event-trigger API does not name
-- their objects.
--
-- It raises CV005 directly rather than through covenant._raise: the
-- statement it judges may be dropping covenant.error_codes or replacing
-- covenant._raise itself.
CREATE OR REPLACE FUNCTION covenant._ddl_guard()
RETURNS event_trigger
LANGUAGE plpgsql
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
            IF v_obj.schema_name IN ('covenant', 'covenant_ext')
               OR (v_obj.object_type = 'schema'
                   AND v_obj.object_identity IN ('covenant', 'covenant_ext')) THEN
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
        IF v_obj.schema_name IN ('covenant', 'covenant_ext')
           OR (v_obj.object_type = 'schema'
               AND v_obj.object_identity IN ('covenant', 'covenant_ext')) THEN
            RAISE EXCEPTION 'NOT_AUTHORIZED: % on % % outside covenant migrate',
                v_obj.command_tag, v_obj.object_type, v_obj.object_identity
                USING ERRCODE = 'CV005',
                      HINT = 'covenant''s schema changes only through a migration';
        END IF;
    END LOOP;
END;
$$;

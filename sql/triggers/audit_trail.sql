-- Append-only, for real (docs/security.md, docs/audit.md).
--
-- Row triggers refuse UPDATE and DELETE; statement triggers refuse TRUNCATE.
-- All are ENABLE ALWAYS, so they fire even under
-- session_replication_role = replica. A BEFORE TRUNCATE trigger on a
-- partitioned table does not fire for TRUNCATE of a partition, so every
-- partition gets its own (covenant._audit_protect_partition, also called by
-- covenant.create_audit_partitions for each new partition).

CREATE OR REPLACE FUNCTION covenant._audit_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._raise(
        'AUDIT_APPEND_ONLY',
        pg_catalog.format('%s on %I.%I is refused', tg_op, tg_table_schema, tg_table_name),
        NULL,
        'the audit record is append-only; see docs/runbook.md'
    );
    RETURN NULL;
END;
$$;

-- Protect one partition (or detached partition) of covenant.audit_trail:
-- its own TRUNCATE trigger, row-level security forced with a SELECT policy
-- for the owner only (through the parent, the parent's policies apply).
CREATE OR REPLACE FUNCTION covenant._audit_protect_partition(p_partition regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER audit_trail_no_truncate BEFORE TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION covenant._audit_refuse_change()', p_partition
    );
    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ENABLE ALWAYS TRIGGER audit_trail_no_truncate', p_partition
    );
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_partition);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_partition);
    EXECUTE pg_catalog.format('DROP POLICY IF EXISTS audit_partition_owner_select ON %s', p_partition);
    EXECUTE pg_catalog.format(
        'CREATE POLICY audit_partition_owner_select ON %s FOR SELECT TO covenant_migrator '
        'USING (TRUE)', p_partition
    );
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', p_partition);
    -- A detached partition no longer has the parent's row triggers.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_inherits WHERE inhrelid = p_partition) THEN
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION covenant._audit_refuse_change()', p_partition
        );
        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ENABLE ALWAYS TRIGGER audit_trail_append_only', p_partition
        );
    END IF;
END;
$$;

-- The parent and the unpartitioned audit tables: a row trigger refusing
-- UPDATE and DELETE (only DELETE for the head, which moves forward on every
-- append, and for the quarantine state, which changes through covenant's
-- functions), and a TRUNCATE trigger; names <prefix>_append_only or
-- <prefix>_no_delete, and <prefix>_no_truncate.
DO $protect$
DECLARE
    v record;
    v_row_trigger text;
BEGIN
    FOR v IN
        SELECT * FROM (VALUES
            ('audit_trail', 'audit_trail', 'UPDATE OR DELETE'),
            ('audit_trail_chain_links', 'audit_chain_links', 'UPDATE OR DELETE'),
            ('audit_trail_checkpoints', 'audit_checkpoints', 'UPDATE OR DELETE'),
            ('audit_trail_retention', 'audit_retention', 'UPDATE OR DELETE'),
            ('audit_trail_head', 'audit_head', 'DELETE'),
            ('audit_quarantine', 'audit_quarantine', 'DELETE')
        ) AS t (tbl, prefix, ops)
    LOOP
        v_row_trigger := v.prefix || CASE WHEN v.ops = 'DELETE' THEN '_no_delete' ELSE '_append_only' END;
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE %s ON covenant.%I '
            'FOR EACH ROW EXECUTE FUNCTION covenant._audit_refuse_change()',
            v_row_trigger, v.ops, v.tbl
        );
        EXECUTE pg_catalog.format(
            'ALTER TABLE covenant.%I ENABLE ALWAYS TRIGGER %I', v.tbl, v_row_trigger
        );
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON covenant.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION covenant._audit_refuse_change()',
            v.prefix || '_no_truncate', v.tbl
        );
        EXECUTE pg_catalog.format(
            'ALTER TABLE covenant.%I ENABLE ALWAYS TRIGGER %I', v.tbl, v.prefix || '_no_truncate'
        );
    END LOOP;
END
$protect$;

-- Every change of a breaker's state is checked against the state machine and
-- recorded on system:quarantine, whoever makes it (covenant._audit_quarantine_changed).
CREATE OR REPLACE TRIGGER audit_quarantine_transition
BEFORE INSERT OR UPDATE ON covenant.audit_quarantine
FOR EACH ROW EXECUTE FUNCTION covenant._audit_quarantine_changed();
ALTER TABLE covenant.audit_quarantine ENABLE ALWAYS TRIGGER audit_quarantine_transition;

-- Every partition there is, attached or detached by retention.
DO $protect$
DECLARE
    v_partition regclass;
BEGIN
    FOR v_partition IN
        SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits AS i
        WHERE i.inhparent = 'covenant.audit_trail'::regclass
        UNION
        SELECT pg_catalog.to_regclass('covenant.' || r.partition_name)
        FROM covenant.audit_trail_retention AS r
        WHERE pg_catalog.to_regclass('covenant.' || r.partition_name) IS NOT NULL
    LOOP
        PERFORM covenant._audit_protect_partition(v_partition);
    END LOOP;
END
$protect$;

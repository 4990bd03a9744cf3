-- Monthly partitions of covenant.audit_trail (docs/audit.md, docs/runbook.md).
-- Names: audit_trail_pYYYYMM, bounds: the UTC month.

-- Is covenant.<p_name> a partition of covenant.audit_trail right now?
CREATE OR REPLACE FUNCTION covenant._audit_partition_attached(p_name text)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_inherits AS i
        WHERE i.inhrelid = pg_catalog.to_regclass('covenant.' || p_name)
          AND i.inhparent = 'covenant.audit_trail'::pg_catalog.regclass
    )
$$;

-- Create the current month's partition and the next p_months_ahead ones,
-- idempotently; returns how many it created. A month whose rows already
-- landed in the DEFAULT partition cannot get a partition (PostgreSQL would
-- have to move rows out of an append-only table): it is skipped with a
-- warning, and audit_partition_health() reports the DEFAULT rows.
CREATE OR REPLACE FUNCTION covenant.create_audit_partitions(p_months_ahead integer)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_month date := pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC')::date;
    v_from date;
    v_name text;
    v_created integer := 0;
    v_ddl text := pg_catalog.current_setting('covenant.ddl', TRUE);
BEGIN
    IF p_months_ahead IS NULL OR p_months_ahead < 0 OR p_months_ahead > 120 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_months_ahead must be between 0 and 120');
    END IF;
    -- our own DDL passes the DDL guard; the caller's setting is restored below
    PERFORM pg_catalog.set_config('covenant.ddl', 'create_audit_partitions', TRUE);
    FOR i IN 0 .. p_months_ahead LOOP
        v_from := (v_month + pg_catalog.make_interval(months => i))::date;
        v_name := 'audit_trail_p' || pg_catalog.to_char(v_from, 'YYYYMM');
        IF pg_catalog.to_regclass('covenant.' || v_name) IS NOT NULL THEN
            IF NOT covenant._audit_partition_attached(v_name) THEN
                RAISE WARNING 'covenant: % exists but is detached; its month''s rows go to the '
                    'DEFAULT partition until it is re-attached (docs/runbook.md)', v_name;
            END IF;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE pg_catalog.format(
                'CREATE TABLE covenant.%I PARTITION OF covenant.audit_trail '
                'FOR VALUES FROM (%L) TO (%L)',
                v_name, v_from::text || ' 00:00:00+00',
                (v_from + pg_catalog.make_interval(months => 1))::date::text || ' 00:00:00+00'
            );
        EXCEPTION WHEN check_violation THEN
            RAISE WARNING 'covenant: % not created: the DEFAULT partition holds rows of that month',
                v_name;
            CONTINUE;
        END;
        PERFORM covenant._audit_protect_partition(('covenant.' || v_name)::regclass);
        v_created := v_created + 1;
    END LOOP;
    PERFORM pg_catalog.set_config('covenant.ddl', coalesce(v_ddl, ''), TRUE);
    RETURN v_created;
END;
$$;

-- Months of headroom (full months after the current one with a partition,
-- contiguously; -1 when even the current month has none), rows in the
-- DEFAULT partition (should be 0), and the newest partition.
CREATE OR REPLACE FUNCTION covenant.audit_partition_health()
RETURNS TABLE (months_ahead integer, default_rows bigint, newest_partition text, partitions integer)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_month date := pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC')::date;
    v_ahead integer := -1;
    v_default bigint;
    v_newest text;
    v_count integer;
BEGIN
    WHILE covenant._audit_partition_attached('audit_trail_p' || pg_catalog.to_char(
        v_month + pg_catalog.make_interval(months => v_ahead + 1), 'YYYYMM'))
        AND v_ahead < 1200 LOOP
        v_ahead := v_ahead + 1;
    END LOOP;
    SELECT count(*) INTO v_default FROM covenant.audit_trail_default;
    SELECT max(c.relname::text), count(*) INTO v_newest, v_count
    FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'covenant.audit_trail'::regclass AND c.relname ~ '^audit_trail_p[0-9]{6}$';
    RETURN QUERY SELECT v_ahead, v_default, v_newest, v_count;
END;
$$;

-- Retention: seal a past month's partition with a checkpoint of every domain
-- that has rows in it, record its row count and checksum, then DETACH it
-- (never DROP). The detached table keeps its append-only triggers and RLS;
-- verification accepts its entries' absence only up to the sealed seqs.
CREATE OR REPLACE FUNCTION covenant.detach_audit_partition(
    p_partition text,
    p_actor_id text
) RETURNS TABLE (partition_name text, row_count bigint, checksum text, sealed jsonb)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_rel regclass;
    v_from timestamptz;
    v_to timestamptz;
    v_rows bigint;
    v_checksum text;
    v_sealed jsonb;
    v_domain text;
    v_cp record;
    v_ddl text;
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_actor_id(p_actor_id);
    IF p_partition IS NULL OR p_partition !~ '^audit_trail_p[0-9]{6}$' THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_partition must name a monthly partition '
                                'audit_trail_pYYYYMM');
    END IF;
    v_rel := pg_catalog.to_regclass('covenant.' || p_partition);
    IF v_rel IS NULL OR NOT EXISTS (SELECT FROM pg_catalog.pg_inherits AS i
                                    WHERE i.inhrelid = v_rel
                                      AND i.inhparent = 'covenant.audit_trail'::regclass) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('%s is not an attached audit partition', p_partition));
    END IF;
    v_from := (pg_catalog.to_date(pg_catalog.right(p_partition, 6), 'YYYYMM')::text
               || ' 00:00:00+00')::timestamptz;
    v_to := v_from + INTERVAL '1 month';
    IF v_to > pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('%s is not a past month', p_partition));
    END IF;
    -- seal: every domain with rows here gets a verified checkpoint at its head
    FOR v_domain IN EXECUTE pg_catalog.format('SELECT DISTINCT domain_tag FROM %s', v_rel) LOOP
        SELECT * INTO v_cp FROM covenant._audit_checkpoint(v_domain, p_actor_id, 'retention');
        IF v_cp.seq IS NULL THEN
            PERFORM covenant._raise(
                'AUDIT_QUARANTINE',
                pg_catalog.format('domain %s failed verification (%s); %s not detached',
                                  v_domain, v_cp.reason, p_partition)
            );
        END IF;
    END LOOP;
    EXECUTE pg_catalog.format(
        'SELECT count(*), pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to('
        'coalesce(pg_catalog.string_agg(pg_catalog.encode(entry_hash, ''hex''), '''' '
        'ORDER BY domain_tag, seq), ''''), ''UTF8'')), ''hex''), '
        'coalesce(pg_catalog.jsonb_object_agg(domain_tag, max_seq), ''{}'') '
        'FROM (SELECT domain_tag, seq, entry_hash, '
        'max(seq) OVER (PARTITION BY domain_tag) AS max_seq FROM %s) AS r', v_rel
    ) INTO v_rows, v_checksum, v_sealed;
    INSERT INTO covenant.audit_trail_retention
        (partition_name, range_from, range_to, row_count, checksum, sealed, detached_by)
    VALUES (p_partition, v_from, v_to, v_rows, v_checksum, v_sealed, p_actor_id);
    v_ddl := pg_catalog.current_setting('covenant.ddl', TRUE);
    PERFORM pg_catalog.set_config('covenant.ddl', 'detach_audit_partition', TRUE);
    EXECUTE pg_catalog.format('ALTER TABLE covenant.audit_trail DETACH PARTITION %s', v_rel);
    PERFORM covenant._audit_protect_partition(v_rel);
    PERFORM pg_catalog.set_config('covenant.ddl', coalesce(v_ddl, ''), TRUE);
    RETURN QUERY SELECT p_partition, v_rows, v_checksum, v_sealed;
END;
$$;

-- Verification and checkpoints (docs/audit.md).

-- Verify a domain's chain without side effects. From p_from_seq (1 = full),
-- or, when NULL, incrementally from the last checkpoint. Recomputes every
-- hash and link in range and cross-checks the chain links (one per entry,
-- never partitioned or detached), the head and every checkpoint, so that
-- deleted, reordered, renumbered, edited, truncated-after-checkpoint and
-- detached entries are caught. Reads a consistent range: the head and the
-- chain's end are read together first, and only seqs up to that head are
-- checked, so concurrent appends cause no false alarm.
CREATE OR REPLACE FUNCTION covenant._audit_verify(p_domain_tag text, p_from_seq bigint)
RETURNS covenant.audit_verification
LANGUAGE plpgsql
-- VOLATILE: each statement takes a new snapshot, so what follows the LOCK
-- sees what committed before it was granted
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_zero bytea := pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
    v_head_seq bigint;
    v_head_hash bytea;
    v_end_seq bigint;
    v_end_hash bytea;
    v_start bigint;
    v_anchor bytea;
    v_checked bigint;
    v_first text;
    v_rows bigint;
    v_bad_seq bigint;
BEGIN
    IF p_from_seq IS NOT NULL AND p_from_seq < 1 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_from_seq must be 1 or more (or NULL)');
    END IF;
    -- Wait out a retention run in progress (DETACH holds ACCESS EXCLUSIVE on
    -- the parent): the statements below then see both the partition gone and
    -- its retention record, never one without the other.
    LOCK TABLE covenant.audit_trail IN ACCESS SHARE MODE;

    -- the head and the end of the chain, in one snapshot
    SELECT h.seq, h.entry_hash, e.seq, e.entry_hash
    INTO v_head_seq, v_head_hash, v_end_seq, v_end_hash
    FROM (SELECT 1) AS one
    LEFT JOIN covenant.audit_trail_head AS h ON h.domain_tag = p_domain_tag
    LEFT JOIN LATERAL (
        SELECT l.seq, l.entry_hash FROM covenant.audit_trail_chain_links AS l
        WHERE l.domain_tag = p_domain_tag ORDER BY l.seq DESC LIMIT 1
    ) AS e ON TRUE;
    IF v_head_seq IS DISTINCT FROM v_end_seq OR v_head_hash IS DISTINCT FROM v_end_hash THEN
        RETURN ROW(FALSE, 0, coalesce(LEAST(v_head_seq, v_end_seq), 1),
                   pg_catalog.format('head (seq %s) does not match the end of the chain (seq %s)',
                                     coalesce(v_head_seq::text, 'none'),
                                     coalesce(v_end_seq::text, 'none')))::covenant.audit_verification;
    END IF;
    IF p_from_seq IS NOT NULL AND p_from_seq > coalesce(v_head_seq, 0) + 1 THEN
        -- a range past the head is a caller's mistake, not a break
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('p_from_seq %s is past the head of %s (seq %s)', p_from_seq,
                              p_domain_tag, coalesce(v_head_seq, 0))
        );
    END IF;
    IF v_head_seq IS NULL THEN
        -- an empty domain, unless entries exist without links or head
        SELECT t.seq INTO v_bad_seq FROM covenant.audit_trail AS t
        WHERE t.domain_tag = p_domain_tag ORDER BY t.seq LIMIT 1;
        IF FOUND THEN
            RETURN ROW(FALSE, 0, v_bad_seq, 'entry without a chain link (written around the '
                       'append functions)')::covenant.audit_verification;
        END IF;
        RETURN ROW(TRUE, 0, NULL, NULL)::covenant.audit_verification;
    END IF;

    -- every checkpoint lies on the chain (catches truncation after a
    -- checkpoint, and history rewritten behind one)
    SELECT c.seq INTO v_bad_seq
    FROM covenant.audit_trail_checkpoints AS c
    LEFT JOIN covenant.audit_trail_chain_links AS l
        ON l.domain_tag = c.domain_tag AND l.seq = c.seq
    WHERE c.domain_tag = p_domain_tag
      AND (l.seq IS NULL OR l.entry_hash <> c.entry_hash)
    ORDER BY c.seq LIMIT 1;
    IF FOUND THEN
        RETURN ROW(FALSE, 0, v_bad_seq, pg_catalog.format(
            'checkpoint at seq %s does not match the chain (truncated or rewritten)', v_bad_seq
        ))::covenant.audit_verification;
    END IF;

    -- where to start, and the hash the first checked entry must follow
    IF p_from_seq IS NULL THEN
        SELECT c.seq + 1, c.entry_hash INTO v_start, v_anchor
        FROM covenant.audit_trail_checkpoints AS c
        WHERE c.domain_tag = p_domain_tag ORDER BY c.seq DESC LIMIT 1;
        IF NOT FOUND THEN
            v_start := 1;
            v_anchor := v_zero;
        END IF;
    ELSIF p_from_seq = 1 THEN
        v_start := 1;
        v_anchor := v_zero;
    ELSE
        v_start := p_from_seq;
        SELECT l.entry_hash INTO v_anchor FROM covenant.audit_trail_chain_links AS l
        WHERE l.domain_tag = p_domain_tag AND l.seq = p_from_seq - 1;
        IF NOT FOUND THEN
            RETURN ROW(FALSE, 0, p_from_seq - 1, pg_catalog.format(
                'seq %s is missing from the chain', p_from_seq - 1
            ))::covenant.audit_verification;
        END IF;
    END IF;
    IF v_start > v_head_seq THEN
        RETURN ROW(TRUE, 0, NULL, NULL)::covenant.audit_verification;
    END IF;


    SELECT
        count(*),
        count(c.t_seq),
        min(pg_catalog.lpad(c.seq::text, 19, '0') || ' ' || c.reason)
        FILTER (WHERE c.reason IS NOT NULL)
    INTO v_checked, v_rows, v_first
    FROM (
        SELECT
            w.seq,
            w.t_seq,
            CASE
                WHEN w.seq <> w.expected_seq
                    THEN pg_catalog.format('seq gap: expected %s, found %s (entries removed or '
                                           'renumbered)', w.expected_seq, w.seq)
                WHEN w.l_prev <> w.expected_prev
                    THEN 'link does not follow the previous entry (reordered or rewritten)'
                -- missing because retention detached its partition: only an
                -- entry of that partition's month, sealed by its record
                WHEN w.t_seq IS NULL AND EXISTS (
                    SELECT FROM covenant.audit_trail_retention AS r
                    WHERE w.l_created_at >= r.range_from AND w.l_created_at < r.range_to
                      AND (r.sealed ->> p_domain_tag)::bigint >= w.seq
                ) THEN NULL
                WHEN w.t_seq IS NULL
                    THEN 'entry missing (deleted, or its partition detached outside retention)'
                WHEN w.t_entry_id <> w.l_entry_id OR w.t_prev <> w.l_prev
                     OR w.t_hash <> w.l_hash
                    THEN 'entry differs from its chain link'
                WHEN w.t_version <> 1 THEN 'unknown hash version'
                WHEN covenant.audit_entry_hash_v1(
                    p_domain_tag, w.seq, w.t_entry_id, w.t_event_type, w.t_actor_id,
                    w.t_event_time, w.t_prev, w.t_payload
                ) <> w.t_hash
                    THEN 'hash mismatch: the entry was edited'
            END AS reason
        FROM (
            SELECT
                l.seq,
                l.entry_id AS l_entry_id,
                l.previous_hash AS l_prev,
                l.entry_hash AS l_hash,
                l.created_at AS l_created_at,
                v_start - 1 + pg_catalog.row_number() OVER win AS expected_seq,
                pg_catalog.lag(l.entry_hash, 1, v_anchor) OVER win AS expected_prev,
                t.seq AS t_seq,
                t.entry_id AS t_entry_id,
                t.previous_hash AS t_prev,
                t.entry_hash AS t_hash,
                t.hash_version AS t_version,
                t.event_type AS t_event_type,
                t.actor_id AS t_actor_id,
                t.event_time AS t_event_time,
                t.payload AS t_payload
            FROM covenant.audit_trail_chain_links AS l
            LEFT JOIN covenant.audit_trail AS t
                ON t.domain_tag = l.domain_tag AND t.seq = l.seq AND t.created_at = l.created_at
            WHERE l.domain_tag = p_domain_tag AND l.seq >= v_start AND l.seq <= v_head_seq
            WINDOW win AS (ORDER BY l.seq)
        ) AS w
    ) AS c;

    IF v_first IS NOT NULL THEN
        RETURN ROW(FALSE, v_checked, pg_catalog.split_part(v_first, ' ', 1)::bigint,
                   pg_catalog.substr(v_first, 21))::covenant.audit_verification;
    END IF;

    -- rows in range that no link accounts for (written around the append
    -- functions, e.g. a second row at an existing seq in another partition)
    IF (SELECT count(*) FROM covenant.audit_trail AS t
        WHERE t.domain_tag = p_domain_tag AND t.seq >= v_start AND t.seq <= v_head_seq) <> v_rows THEN
        SELECT t.seq INTO v_bad_seq FROM covenant.audit_trail AS t
        WHERE t.domain_tag = p_domain_tag AND t.seq >= v_start AND t.seq <= v_head_seq
          AND NOT EXISTS (
              SELECT FROM covenant.audit_trail_chain_links AS l
              WHERE l.domain_tag = t.domain_tag AND l.seq = t.seq AND l.created_at = t.created_at
          )
        ORDER BY t.seq LIMIT 1;
        RETURN ROW(FALSE, v_checked, v_bad_seq,
                   'entry without a chain link (written around the append functions)')
            ::covenant.audit_verification;
    END IF;
    -- rows past the head without a link: planted (a concurrent append commits
    -- its row and its link together, so it never shows up here)
    SELECT t.seq INTO v_bad_seq FROM covenant.audit_trail AS t
    WHERE t.domain_tag = p_domain_tag AND t.seq > v_head_seq
      AND NOT EXISTS (
          SELECT FROM covenant.audit_trail_chain_links AS l
          WHERE l.domain_tag = t.domain_tag AND l.seq = t.seq AND l.created_at = t.created_at
      )
    ORDER BY t.seq LIMIT 1;
    IF FOUND THEN
        RETURN ROW(FALSE, v_checked, v_bad_seq,
                   'entry without a chain link (written around the append functions)')
            ::covenant.audit_verification;
    END IF;
    RETURN ROW(TRUE, v_checked, NULL, NULL)::covenant.audit_verification;
END;
$$;

-- Verify (SPEC §3.5). A failure opens the domain's quarantine (committed
-- with the caller's transaction); a success resets its failure count.
CREATE OR REPLACE FUNCTION covenant.verify_audit_chain(
    p_domain_tag text,
    p_from_seq bigint DEFAULT NULL
) RETURNS TABLE (ok boolean, checked bigint, first_bad_seq bigint, reason text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_result covenant.audit_verification;
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_domain_tag(p_domain_tag);
    v_result := covenant._audit_verify(p_domain_tag, p_from_seq);
    IF v_result.ok THEN
        UPDATE covenant.audit_quarantine AS q SET consecutive_failures = 0, updated_at = pg_catalog.clock_timestamp()
        WHERE q.domain_tag = p_domain_tag AND q.consecutive_failures > 0;
    ELSE
        PERFORM covenant._audit_quarantine_break(
            p_domain_tag, v_result.first_bad_seq, v_result.reason
        );
    END IF;
    RETURN QUERY SELECT v_result.ok, v_result.checked, v_result.first_bad_seq, v_result.reason;
END;
$$;

-- Seal the chain up to its head with a checkpoint, after verifying it from
-- the last checkpoint. Returns the checkpoint, or (when verification fails,
-- which opens the quarantine) NULL seq with the reason.
CREATE OR REPLACE FUNCTION covenant.create_audit_checkpoint(
    p_domain_tag text,
    p_actor_id text
) RETURNS TABLE (domain_tag text, seq bigint, entry_hash bytea, created boolean, reason text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_domain_tag(p_domain_tag);
    PERFORM covenant._check_actor_id(p_actor_id);
    RETURN QUERY SELECT * FROM covenant._audit_checkpoint(p_domain_tag, p_actor_id, 'manual');
END;
$$;

CREATE OR REPLACE FUNCTION covenant._audit_checkpoint(
    p_domain_tag text,
    p_actor_id text,
    p_reason text
) RETURNS TABLE (domain_tag text, seq bigint, entry_hash bytea, created boolean, reason text)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_result covenant.audit_verification;
    v_head covenant.audit_trail_head%ROWTYPE;
    v_last bigint;
BEGIN
    -- the head must not move between verification and the checkpoint
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));
    SELECT h.* INTO v_head FROM covenant.audit_trail_head AS h WHERE h.domain_tag = p_domain_tag;
    IF NOT FOUND THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('domain %s has no entries to checkpoint', p_domain_tag));
    END IF;
    SELECT max(c.seq) INTO v_last FROM covenant.audit_trail_checkpoints AS c
    WHERE c.domain_tag = p_domain_tag;
    IF v_last = v_head.seq THEN
        RETURN QUERY SELECT p_domain_tag, v_head.seq, v_head.entry_hash, FALSE, 'already checkpointed'::text;
        RETURN;
    END IF;
    v_result := covenant._audit_verify(p_domain_tag, NULL);
    IF NOT v_result.ok THEN
        PERFORM covenant._audit_quarantine_break(p_domain_tag, v_result.first_bad_seq, v_result.reason);
        RETURN QUERY SELECT p_domain_tag, NULL::bigint, NULL::bytea, FALSE, v_result.reason;
        RETURN;
    END IF;
    INSERT INTO covenant.audit_trail_checkpoints
        (domain_tag, seq, entry_hash, entry_count, reason, created_by)
    VALUES (p_domain_tag, v_head.seq, v_head.entry_hash, v_head.seq, p_reason, p_actor_id);
    RETURN QUERY SELECT p_domain_tag, v_head.seq, v_head.entry_hash, TRUE, NULL::text;
END;
$$;

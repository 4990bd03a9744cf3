-- Reads of the ledger: balances and reconciliation (docs/ledger.md,
-- docs/invariants.md). The two public reads are SECURITY DEFINER (they read
-- only, and raise through the private covenant._raise); their helper is not
-- granted to anyone.

-- An account's credits: available (balance of unexpired lots), reserved,
-- consumed (spent or moved out), allocated (everything that ever entered),
-- and expired (balance stranded in expired lots), so that
-- allocated = available + expired + reserved + consumed. numeric, because
-- the sums of bigint amounts may exceed a bigint. ACCOUNT_UNKNOWN when the
-- account does not exist.
CREATE OR REPLACE FUNCTION covenant.account_balance(p_account_id uuid)
RETURNS TABLE (available numeric, reserved numeric, consumed numeric, allocated numeric, expired numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM covenant.accounts AS a WHERE a.account_id = p_account_id) THEN
        PERFORM covenant._raise('ACCOUNT_UNKNOWN', pg_catalog.format('no account %s', p_account_id));
    END IF;
    RETURN QUERY
    SELECT
        coalesce(sum(l.balance) FILTER (WHERE l.expires_at IS NULL OR l.expires_at > pg_catalog.now()), 0),
        coalesce(sum(l.reserved), 0),
        coalesce(sum(l.consumed), 0),
        coalesce(sum(l.original_allocation), 0),
        coalesce(sum(l.balance) FILTER (WHERE l.expires_at <= pg_catalog.now()), 0)
    FROM covenant.credit_lots AS l
    WHERE l.account_id = p_account_id;
END;
$$;

-- The checks behind covenant.reconcile(): one row per reconciliation
-- invariant.
CREATE OR REPLACE FUNCTION covenant._reconcile_checks(p_sweep_grace interval)
RETURNS TABLE (invariant_id text, ok boolean, detail jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad bigint;
    v_bad2 bigint;
    v_bad3 bigint;
    v_bad4 bigint;
    v_minted numeric;
    v_held numeric;
    v_spent numeric;
    v_treasury numeric;
    v_grants numeric;
    v_detail jsonb;
BEGIN
    -- I-1: every lot conserves
    SELECT count(*) INTO v_bad FROM covenant.credit_lots AS l
    WHERE l.balance::numeric + l.reserved + l.consumed <> l.original_allocation;
    RETURN QUERY SELECT 'I-1'::text, v_bad = 0,
        pg_catalog.jsonb_build_object('lots_not_conserving', v_bad);

    -- I-2: no negative amount anywhere
    SELECT
        (SELECT count(*) FROM covenant.credit_lots AS l
         WHERE l.balance < 0 OR l.reserved < 0 OR l.consumed < 0 OR l.original_allocation <= 0)
        + (SELECT count(*) FROM covenant.credit_reservations AS r
           WHERE r.amount_micro <= 0 OR r.consumed_micro < 0 OR r.released_micro < 0)
        + (SELECT count(*) FROM covenant.credit_ledger AS j WHERE j.amount_micro <= 0)
    INTO v_bad;
    RETURN QUERY SELECT 'I-2'::text, v_bad = 0,
        pg_catalog.jsonb_build_object('negative_or_zero_amounts', v_bad);

    -- I-4: lots equal their journal; moves balance per mutation; minted =
    -- held + spent; each account's reserved equals its pending reservations
    WITH j AS (
        SELECT
            x.account_id, x.lot_id,
            sum(x.amount_micro::numeric * t.allocation_sign) AS a,
            sum(x.amount_micro::numeric * t.balance_sign) AS b,
            sum(x.amount_micro::numeric * t.reserved_sign) AS r,
            sum(x.amount_micro::numeric * t.consumed_sign) AS c
        FROM covenant.credit_ledger AS x
        INNER JOIN covenant.ledger_entry_types AS t ON x.entry_type = t.entry_type
        GROUP BY x.account_id, x.lot_id
    )
    SELECT count(*) INTO v_bad
    FROM covenant.credit_lots AS l
    FULL JOIN j ON l.account_id = j.account_id AND l.lot_id = j.lot_id
    WHERE l.lot_id IS NULL OR j.lot_id IS NULL
       OR j.a <> l.original_allocation OR j.b <> l.balance OR j.r <> l.reserved OR j.c <> l.consumed;

    SELECT count(*) INTO v_bad2 FROM (
        SELECT x.mutation_id
        FROM covenant.credit_ledger AS x
        INNER JOIN covenant.ledger_entry_types AS t ON x.entry_type = t.entry_type
        WHERE t.flow IN ('move_out', 'move_in')
        GROUP BY x.mutation_id
        HAVING sum(CASE WHEN t.flow = 'move_out' THEN x.amount_micro::numeric ELSE -x.amount_micro END) <> 0
    ) AS m;

    SELECT
        coalesce(sum(x.amount_micro::numeric) FILTER (WHERE t.flow = 'mint'), 0),
        coalesce(sum(x.amount_micro::numeric) FILTER (WHERE t.flow = 'spend'), 0)
    INTO v_minted, v_spent
    FROM covenant.credit_ledger AS x
    INNER JOIN covenant.ledger_entry_types AS t ON x.entry_type = t.entry_type;
    SELECT coalesce(sum(l.balance::numeric + l.reserved), 0) INTO v_held FROM covenant.credit_lots AS l;

    SELECT count(*) INTO v_bad3 FROM (
        SELECT l.account_id, sum(l.reserved) AS held FROM covenant.credit_lots AS l GROUP BY l.account_id
    ) AS h
    FULL JOIN (
        SELECT r.account_id, sum(r.amount_micro) AS pending FROM covenant.credit_reservations AS r
        WHERE r.status = 'pending' GROUP BY r.account_id
    ) AS p ON h.account_id = p.account_id
    WHERE coalesce(h.held, 0) <> coalesce(p.pending, 0);

    SELECT count(*) INTO v_bad4 FROM (
        SELECT rl.account_id, rl.reservation_id, sum(rl.amount_micro) AS drawn
        FROM covenant.reservation_lots AS rl GROUP BY rl.account_id, rl.reservation_id
    ) AS d
    FULL JOIN covenant.credit_reservations AS r
        ON d.account_id = r.account_id AND d.reservation_id = r.reservation_id
    WHERE d.drawn IS DISTINCT FROM r.amount_micro::numeric;

    v_detail := pg_catalog.jsonb_build_object(
        'lots_off_journal', v_bad, 'unbalanced_moves', v_bad2,
        'accounts_reserved_mismatch', v_bad3, 'reservations_draw_mismatch', v_bad4,
        'minted_micro', v_minted::text, 'held_micro', v_held::text, 'spent_micro', v_spent::text
    );
    RETURN QUERY SELECT 'I-4'::text,
        v_bad = 0 AND v_bad2 = 0 AND v_bad3 = 0 AND v_bad4 = 0 AND v_minted = v_held + v_spent,
        v_detail;

    -- I-10: resolved reservations split exactly; pending ones hold everything
    SELECT count(*) INTO v_bad FROM covenant.credit_reservations AS r
    WHERE NOT (
        (r.status = 'pending' AND r.consumed_micro = 0 AND r.released_micro = 0)
        OR (r.status = 'finalized' AND r.consumed_micro::numeric + r.released_micro = r.amount_micro)
        OR (r.status IN ('released', 'expired') AND r.consumed_micro = 0 AND r.released_micro = r.amount_micro)
    );
    RETURN QUERY SELECT 'I-10'::text, v_bad = 0,
        pg_catalog.jsonb_build_object('reservations_not_conserving', v_bad);

    -- I-12: nothing pending is overdue by more than the grace
    SELECT count(*) INTO v_bad FROM covenant.credit_reservations AS r
    WHERE r.status = 'pending' AND r.expires_at < pg_catalog.now() - p_sweep_grace;
    RETURN QUERY SELECT 'I-12'::text, v_bad = 0,
        pg_catalog.jsonb_build_object('overdue_pending', v_bad, 'grace', p_sweep_grace::text);

    -- I-13: the treasury covers every unspent grant outside it
    SELECT coalesce(sum(l.balance::numeric + l.reserved), 0) INTO v_grants
    FROM covenant.credit_lots AS l
    INNER JOIN covenant.accounts AS a ON l.account_id = a.account_id
    WHERE l.source_type = 'grant' AND a.kind <> 'treasury';
    SELECT coalesce(sum(l.balance), 0) INTO v_treasury
    FROM covenant.credit_lots AS l
    INNER JOIN covenant.accounts AS a ON l.account_id = a.account_id
    WHERE a.kind = 'treasury' AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now());
    RETURN QUERY SELECT 'I-13'::text, v_treasury >= v_grants,
        pg_catalog.jsonb_build_object('treasury_available_micro', v_treasury::text,
                                      'unspent_grants_micro', v_grants::text);

    -- I-14: each mutation has its one audit entry, and each account: entry
    -- its mutation
    SELECT count(*) INTO v_bad FROM covenant.ledger_mutations AS m
    WHERE NOT EXISTS (
        SELECT FROM covenant.audit_trail_chain_links AS k
        WHERE k.entry_id = m.mutation_id AND k.domain_tag = 'account:' || m.account_id::text
    );
    SELECT count(*) INTO v_bad2 FROM covenant.audit_trail_chain_links AS k
    WHERE k.domain_tag LIKE 'account:%'
      AND NOT EXISTS (SELECT FROM covenant.ledger_mutations AS m WHERE m.mutation_id = k.entry_id);
    RETURN QUERY SELECT 'I-14'::text, v_bad = 0 AND v_bad2 = 0,
        pg_catalog.jsonb_build_object('mutations_without_entry', v_bad, 'entries_without_mutation', v_bad2);
END;
$$;

-- Every reconciliation invariant of covenant.invariants, one row each, in
-- catalogue order; failure_code (from the catalogue) is set when it does not
-- hold. p_sweep_grace: how overdue a pending reservation may be before I-12
-- fails (one sweep interval plus slack).
CREATE OR REPLACE FUNCTION covenant.reconcile(p_sweep_grace interval DEFAULT '5 minutes')
RETURNS TABLE (invariant_id text, ok boolean, failure_code text, detail jsonb)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.invariant_id, c.ok, CASE WHEN c.ok THEN NULL ELSE i.failure_code END, c.detail
    FROM covenant._reconcile_checks(coalesce(p_sweep_grace, INTERVAL '5 minutes')) AS c
    INNER JOIN covenant.invariants AS i ON c.invariant_id = i.invariant_id
    ORDER BY pg_catalog.substr(c.invariant_id, 3)::integer
$$;

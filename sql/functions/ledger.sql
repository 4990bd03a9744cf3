-- The governed functions of the credit ledger (SPEC §4, docs/ledger.md).
-- SECURITY DEFINER, EXECUTE for covenant_app (sql/policies/ledger.sql); each
-- follows the order described in ledger_common.sql. Money in audit payloads
-- is a decimal string, so values above 2^53 survive any JSON reader. The
-- functions whose stored request holds a time or an interval pin TimeZone and
-- IntervalStyle, so that the same call from a differently configured session
-- is the same request (a replay, not IDEMPOTENCY_CONFLICT).

CREATE OR REPLACE FUNCTION covenant.create_account(
    p_account_id uuid, p_kind text, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_request jsonb;
    v_bound bigint;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_account_id', p_account_id);
    SELECT k.default_receivable_bound_micro INTO v_bound FROM covenant.account_kinds AS k
    WHERE k.kind = p_kind;
    IF NOT FOUND THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('unknown account kind %s',
                              coalesce(pg_catalog.quote_literal(pg_catalog.left(p_kind, 40)), 'NULL')),
            NULL, 'covenant.account_kinds lists the kinds'
        );
    END IF;
    PERFORM covenant._authorize('create_account', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'account_id', p_account_id, 'kind', p_kind, 'actor_id', p_actor_id
    );
    IF covenant._mutation_replay(p_mutation_id, 'create_account', v_request) IS NOT NULL THEN
        RETURN;
    END IF;
    -- the account's primary key serializes concurrent creations of one id
    INSERT INTO covenant.accounts (account_id, kind, receivable_bound_micro, created_by)
    VALUES (p_account_id, p_kind, v_bound, p_actor_id)
    ON CONFLICT (account_id) DO NOTHING;
    IF NOT FOUND THEN
        -- a concurrent duplicate of this very request has committed: replay it
        IF covenant._mutation_replay(p_mutation_id, 'create_account', v_request) IS NOT NULL THEN
            RETURN;
        END IF;
        PERFORM covenant._raise('ACCOUNT_EXISTS', pg_catalog.format('account %s exists', p_account_id));
    END IF;
    IF p_kind = 'agent' THEN
        INSERT INTO covenant.agent_reputation (agent_id) VALUES (p_account_id);
    END IF;
    PERFORM covenant._mutation_record(p_mutation_id, p_account_id, 'create_account', p_actor_id,
                                      v_request, '{}');
    PERFORM covenant._ledger_audit(p_account_id, p_mutation_id, 'create_account', p_actor_id,
                                   pg_catalog.jsonb_build_object(
                                       'account_id', p_account_id, 'kind', p_kind,
                                       'receivable_bound_micro', v_bound::text
                                   ));
END;
$$;

-- I-3: set (or clear, with NULL) the most an account may hold in pending
-- reservations. Lowering it below what is held refuses new reservations
-- only.
CREATE OR REPLACE FUNCTION covenant.set_receivable_bound(
    p_account_id uuid, p_bound_micro bigint, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_request jsonb;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_account_id', p_account_id);
    IF p_bound_micro IS NOT NULL THEN
        PERFORM covenant._ledger_check_amount('p_bound_micro', p_bound_micro, TRUE);
    END IF;
    PERFORM covenant._authorize('set_receivable_bound', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'account_id', p_account_id, 'bound_micro', p_bound_micro::text, 'actor_id', p_actor_id
    );
    PERFORM covenant._lock_account(p_account_id);
    IF covenant._mutation_replay(p_mutation_id, 'set_receivable_bound', v_request) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM covenant._mutation_record(p_mutation_id, p_account_id, 'set_receivable_bound', p_actor_id,
                                      v_request, '{}');
    UPDATE covenant.accounts AS a SET receivable_bound_micro = p_bound_micro
    WHERE a.account_id = p_account_id;
    PERFORM covenant._ledger_audit(p_account_id, p_mutation_id, 'set_receivable_bound', p_actor_id,
                                   v_request - 'actor_id');
END;
$$;

CREATE OR REPLACE FUNCTION covenant.allocate_credits(
    p_account_id uuid, p_amount_micro bigint, p_source_type text,
    p_actor_id text, p_mutation_id uuid, p_expires_at timestamptz DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'postgres'
AS $$
DECLARE
    v_request jsonb;
    v_result jsonb;
    v_entry_type text;
    v_lot_id uuid;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_account_id', p_account_id);
    PERFORM covenant._ledger_check_amount('p_amount_micro', p_amount_micro);
    SELECT s.opening_entry_type INTO v_entry_type FROM covenant.lot_source_types AS s
    WHERE s.source_type = p_source_type AND s.allocatable;
    IF NOT FOUND THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('%s is not a source type allocate_credits may open',
                              coalesce(pg_catalog.quote_literal(pg_catalog.left(p_source_type, 40)), 'NULL')),
            NULL, 'covenant.lot_source_types: the allocatable ones'
        );
    END IF;
    IF p_expires_at IS NOT NULL AND (NOT pg_catalog.isfinite(p_expires_at) OR p_expires_at <= pg_catalog.now()) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_expires_at must be a finite time in the future, or NULL');
    END IF;
    PERFORM covenant._authorize('allocate_credits', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'account_id', p_account_id, 'amount_micro', p_amount_micro::text, 'source_type', p_source_type,
        'expires_at', p_expires_at, 'actor_id', p_actor_id
    );
    PERFORM covenant._lock_account(p_account_id);
    v_result := covenant._mutation_replay(p_mutation_id, 'allocate_credits', v_request);
    IF v_result IS NOT NULL THEN
        RETURN (v_result ->> 'lot_id')::uuid;
    END IF;
    v_lot_id := pg_catalog.gen_random_uuid();
    PERFORM covenant._mutation_record(p_mutation_id, p_account_id, 'allocate_credits', p_actor_id,
                                      v_request, pg_catalog.jsonb_build_object('lot_id', v_lot_id));
    INSERT INTO covenant.credit_lots
        (account_id, lot_id, source_type, original_allocation, balance, expires_at, mutation_id)
    VALUES (p_account_id, v_lot_id, p_source_type, p_amount_micro, p_amount_micro, p_expires_at, p_mutation_id);
    INSERT INTO covenant.credit_ledger (account_id, mutation_id, line_no, lot_id, entry_type, amount_micro)
    VALUES (p_account_id, p_mutation_id, 1, v_lot_id, v_entry_type, p_amount_micro);
    PERFORM covenant._ledger_audit(p_account_id, p_mutation_id, 'allocate_credits', p_actor_id,
                                   (v_request - 'actor_id') || pg_catalog.jsonb_build_object('lot_id', v_lot_id));
    RETURN v_lot_id;
END;
$$;

CREATE OR REPLACE FUNCTION covenant.reserve_credits(
    p_account_id uuid, p_amount_micro bigint, p_ttl interval, p_actor_id text, p_mutation_id uuid
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'postgres'
AS $$
DECLARE
    v_request jsonb;
    v_result jsonb;
    v_account covenant.accounts;
    v_held numeric;
    v_draw record;
    v_reservation_id uuid;
    v_expires_at timestamptz;
BEGIN
    -- the common case in one expression; the checkers run only to say what
    -- is wrong
    IF NOT coalesce(
        p_actor_id ~ ('^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
                      || '|service:[a-z0-9][a-z0-9_.-]{0,63})$')
        AND p_mutation_id IS NOT NULL AND p_account_id IS NOT NULL AND p_amount_micro > 0
        AND pg_catalog.isfinite(p_ttl) AND p_ttl > INTERVAL '0' AND p_ttl <= INTERVAL '30 days',
        FALSE
    ) THEN
        PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
        PERFORM covenant._ledger_require('p_account_id', p_account_id);
        PERFORM covenant._ledger_check_amount('p_amount_micro', p_amount_micro);
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('p_ttl must be positive and at most 30 days, not %s',
                                                  coalesce(p_ttl::text, 'NULL')));
    END IF;
    PERFORM covenant._authorize('reserve_credits', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'account_id', p_account_id, 'amount_micro', p_amount_micro::text, 'ttl', p_ttl::text,
        'actor_id', p_actor_id
    );
    v_account := covenant._lock_account(p_account_id);
    v_result := covenant._mutation_replay(p_mutation_id, 'reserve_credits', v_request);
    IF v_result IS NOT NULL THEN
        RETURN (v_result ->> 'reservation_id')::uuid;
    END IF;
    IF v_account.receivable_bound_micro IS NOT NULL THEN
        SELECT coalesce(sum(l.reserved), 0) INTO v_held FROM covenant.credit_lots AS l
        WHERE l.account_id = p_account_id AND l.reserved > 0;
        IF v_held + p_amount_micro > v_account.receivable_bound_micro THEN
            PERFORM covenant._raise(
                'RECEIVABLE_BOUND_EXCEEDED',
                pg_catalog.format('account %s holds %s micro-USD in pending reservations; %s more would '
                                  || 'exceed its bound of %s', p_account_id, v_held, p_amount_micro,
                                  v_account.receivable_bound_micro)
            );
        END IF;
    END IF;
    SELECT d.* INTO v_draw FROM covenant._draw_lots(p_account_id, p_amount_micro) AS d;
    v_reservation_id := pg_catalog.gen_random_uuid();
    v_expires_at := pg_catalog.now() + p_ttl;
    PERFORM covenant._mutation_record(p_mutation_id, p_account_id, 'reserve_credits', p_actor_id,
                                      v_request, pg_catalog.jsonb_build_object('reservation_id', v_reservation_id));
    UPDATE covenant.credit_lots AS l
    SET balance = l.balance - u.amount, reserved = l.reserved + u.amount
    FROM unnest(v_draw.lot_ids, v_draw.amounts) AS u (lot_id, amount)
    WHERE l.account_id = p_account_id AND l.lot_id = u.lot_id;
    INSERT INTO covenant.credit_reservations (account_id, reservation_id, amount_micro, expires_at, mutation_id)
    VALUES (p_account_id, v_reservation_id, p_amount_micro, v_expires_at, p_mutation_id);
    INSERT INTO covenant.reservation_lots (account_id, reservation_id, lot_id, draw_no, amount_micro)
    SELECT p_account_id, v_reservation_id, u.lot_id, u.n::integer, u.amount
    FROM unnest(v_draw.lot_ids, v_draw.amounts) WITH ORDINALITY AS u (lot_id, amount, n);
    INSERT INTO covenant.credit_ledger
        (account_id, mutation_id, line_no, lot_id, entry_type, amount_micro, reservation_id)
    SELECT p_account_id, p_mutation_id, u.n::integer, u.lot_id, 'reserve', u.amount, v_reservation_id
    FROM unnest(v_draw.lot_ids, v_draw.amounts) WITH ORDINALITY AS u (lot_id, amount, n);
    PERFORM covenant._ledger_audit(
        p_account_id, p_mutation_id, 'reserve_credits', p_actor_id,
        pg_catalog.jsonb_build_object(
            'reservation_id', v_reservation_id, 'amount_micro', p_amount_micro::text,
            'expires_at', v_expires_at,
            'lots', covenant._draw_json(v_draw.lot_ids, v_draw.amounts)
        )
    );
    RETURN v_reservation_id;
END;
$$;

-- The reservation's account (no lock); RESERVATION_UNKNOWN when none.
CREATE OR REPLACE FUNCTION covenant._reservation_account(p_reservation_id uuid)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_account_id uuid;
BEGIN
    SELECT r.account_id INTO v_account_id FROM covenant.credit_reservations AS r
    WHERE r.reservation_id = p_reservation_id;
    IF NOT FOUND THEN
        PERFORM covenant._raise('RESERVATION_UNKNOWN',
                                pg_catalog.format('no reservation %s', p_reservation_id));
    END IF;
    RETURN v_account_id;
END;
$$;

-- Finalize, release or a usage report: everything after the lookup. Under
-- the account lock: replay, the state machine, the TTL, the amount, then the
-- resolution, its record and its audit entry.
CREATE OR REPLACE FUNCTION covenant._settle_reservation(
    p_operation text, p_account_id uuid, p_reservation_id uuid, p_actual bigint,
    p_actor_id text, p_mutation_id uuid, p_request jsonb, p_jti uuid DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_res covenant.credit_reservations;
    v_status text := CASE WHEN p_operation = 'release_reservation' THEN 'released' ELSE 'finalized' END;
    v_actual bigint;
    v_detail jsonb;
BEGIN
    PERFORM covenant._lock_account(p_account_id);
    IF p_jti IS NOT NULL AND EXISTS (SELECT FROM covenant.usage_tokens AS t WHERE t.jti = p_jti) THEN
        PERFORM covenant._raise('USAGE_REPLAY', pg_catalog.format('usage report %s was already redeemed', p_jti));
    END IF;
    IF covenant._mutation_replay(p_mutation_id, p_operation, p_request) IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT r.* INTO STRICT v_res FROM covenant.credit_reservations AS r
    WHERE r.account_id = p_account_id AND r.reservation_id = p_reservation_id;
    IF v_res.status <> 'pending' THEN
        PERFORM covenant._transition('reservation', v_res.status, v_status);
    END IF;
    IF v_res.expires_at <= pg_catalog.now() THEN
        PERFORM covenant._raise(
            'RESERVATION_EXPIRED',
            pg_catalog.format('reservation %s expired at %s; only the expiry sweep resolves it now',
                              p_reservation_id, v_res.expires_at)
        );
    END IF;
    v_actual := coalesce(p_actual, 0);
    IF v_actual > v_res.amount_micro THEN
        PERFORM covenant._raise(
            'BUDGET_OVERSPEND',
            pg_catalog.format('actual %s exceeds the %s micro-USD reserved by %s',
                              v_actual, v_res.amount_micro, p_reservation_id)
        );
    END IF;
    IF p_jti IS NOT NULL THEN
        INSERT INTO covenant.usage_tokens (jti, account_id, reservation_id, actual_micro, actor_id)
        VALUES (p_jti, p_account_id, p_reservation_id, v_actual, p_actor_id)
        ON CONFLICT (jti) DO NOTHING;
        IF NOT FOUND THEN
            PERFORM covenant._raise('USAGE_REPLAY',
                                    pg_catalog.format('usage report %s was redeemed concurrently', p_jti));
        END IF;
    END IF;
    PERFORM covenant._mutation_record(p_mutation_id, p_account_id, p_operation, p_actor_id, p_request, '{}');
    v_detail := covenant._resolve_reservation(
        p_account_id, p_reservation_id, v_status, v_actual, p_mutation_id, 'release'
    );
    PERFORM covenant._ledger_audit(
        p_account_id, p_mutation_id, p_operation, p_actor_id,
        pg_catalog.jsonb_build_object(
            'reservation_id', p_reservation_id, 'status', v_status,
            'reserved_micro', v_res.amount_micro::text, 'consumed_micro', v_actual::text,
            'returned_micro', (v_res.amount_micro - v_actual)::text, 'jti', p_jti
        ) || v_detail
    );
END;
$$;

CREATE OR REPLACE FUNCTION covenant.finalize_reservation(
    p_reservation_id uuid, p_actual_micro bigint, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(
        p_actor_id ~ ('^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
                      || '|service:[a-z0-9][a-z0-9_.-]{0,63})$')
        AND p_mutation_id IS NOT NULL AND p_reservation_id IS NOT NULL AND p_actual_micro >= 0,
        FALSE
    ) THEN
        PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
        PERFORM covenant._ledger_require('p_reservation_id', p_reservation_id);
        PERFORM covenant._ledger_check_amount('p_actual_micro', p_actual_micro, TRUE);
    END IF;
    PERFORM covenant._authorize('finalize_reservation', p_actor_id);
    PERFORM covenant._settle_reservation(
        'finalize_reservation', covenant._reservation_account(p_reservation_id), p_reservation_id,
        p_actual_micro, p_actor_id, p_mutation_id,
        pg_catalog.jsonb_build_object(
            'reservation_id', p_reservation_id, 'actual_micro', p_actual_micro::text, 'actor_id', p_actor_id
        )
    );
END;
$$;

CREATE OR REPLACE FUNCTION covenant.release_reservation(
    p_reservation_id uuid, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_reservation_id', p_reservation_id);
    PERFORM covenant._authorize('release_reservation', p_actor_id);
    PERFORM covenant._settle_reservation(
        'release_reservation', covenant._reservation_account(p_reservation_id), p_reservation_id,
        0, p_actor_id, p_mutation_id,
        pg_catalog.jsonb_build_object('reservation_id', p_reservation_id, 'actor_id', p_actor_id)
    );
END;
$$;

-- A signed usage report, already verified by the caller (covenant.usage):
-- finalize the reservation with its actual cost and record its jti, which is
-- also the mutation id, in one transaction. A jti is redeemed once
-- (USAGE_REPLAY), even across processes.
CREATE OR REPLACE FUNCTION covenant.finalize_usage_report(
    p_jti uuid, p_reservation_id uuid, p_actual_micro bigint, p_actor_id text
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_jti);
    PERFORM covenant._ledger_require('p_reservation_id', p_reservation_id);
    PERFORM covenant._ledger_check_amount('p_actual_micro', p_actual_micro, TRUE);
    PERFORM covenant._authorize('finalize_usage_report', p_actor_id);
    PERFORM covenant._settle_reservation(
        'finalize_usage_report', covenant._reservation_account(p_reservation_id), p_reservation_id,
        p_actual_micro, p_actor_id, p_jti,
        pg_catalog.jsonb_build_object(
            'reservation_id', p_reservation_id, 'actual_micro', p_actual_micro::text, 'actor_id', p_actor_id
        ),
        p_jti
    );
END;
$$;

-- The expiry sweep: every pending reservation whose TTL passed by p_now
-- (oldest first, at most p_limit) goes back to its lots' balance, each with
-- its own mutation and audit entry, by actor service:covenant.expiry. The
-- mutation id is random: a re-run cannot apply an expiry twice because the
-- reservation's status is re-read under its account's lock, and an id no
-- client can predict cannot be claimed first to stall the sweep.
-- Accounts are locked in account_id order (no deadlock between sweeps); a
-- quarantined account's reservations are skipped (they stay pending and
-- reconcile() reports them, I-12). Returns how many it expired.
CREATE OR REPLACE FUNCTION covenant.expire_reservations(
    p_now timestamptz DEFAULT now(), p_limit integer DEFAULT 1000
) RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_actor CONSTANT text := 'service:covenant.expiry';
    v_candidate record;
    v_res covenant.credit_reservations;
    v_mutation_id uuid;
    v_detail jsonb;
    v_count integer := 0;
BEGIN
    IF p_now IS NULL OR NOT pg_catalog.isfinite(p_now) OR p_now > pg_catalog.clock_timestamp() THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_now must be a finite time, not in the future');
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_limit must be between 1 and 100000');
    END IF;
    PERFORM covenant._authorize('expire_reservation', c_actor);
    FOR v_candidate IN
        SELECT s.account_id, s.reservation_id FROM (
            SELECT r.account_id, r.reservation_id, r.expires_at
            FROM covenant.credit_reservations AS r
            WHERE r.status = 'pending' AND r.expires_at <= p_now
              AND NOT EXISTS (
                  SELECT FROM covenant.audit_quarantine AS q
                  WHERE q.domain_tag = 'account:' || r.account_id::text AND q.state <> 'closed'
              )
            ORDER BY r.expires_at
            LIMIT p_limit
        ) AS s
        ORDER BY s.account_id, s.expires_at
    LOOP
        PERFORM covenant._lock_account(v_candidate.account_id);
        SELECT r.* INTO v_res FROM covenant.credit_reservations AS r
        WHERE r.account_id = v_candidate.account_id AND r.reservation_id = v_candidate.reservation_id;
        IF v_res.status <> 'pending' THEN
            CONTINUE;  -- resolved meanwhile
        END IF;
        v_mutation_id := pg_catalog.gen_random_uuid();
        PERFORM covenant._mutation_record(
            v_mutation_id, v_res.account_id, 'expire_reservation', c_actor,
            pg_catalog.jsonb_build_object('reservation_id', v_res.reservation_id, 'actor_id', c_actor), '{}'
        );
        v_detail := covenant._resolve_reservation(
            v_res.account_id, v_res.reservation_id, 'expired', 0, v_mutation_id, 'expire'
        );
        PERFORM covenant._ledger_audit(
            v_res.account_id, v_mutation_id, 'expire_reservation', c_actor,
            pg_catalog.jsonb_build_object(
                'reservation_id', v_res.reservation_id, 'status', 'expired',
                'expires_at', v_res.expires_at, 'returned_micro', v_res.amount_micro::text
            ) || v_detail
        );
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;

CREATE OR REPLACE FUNCTION covenant.transfer_credits(
    p_from_account uuid, p_to_account uuid, p_amount_micro bigint, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_request jsonb;
    v_detail jsonb;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_from_account', p_from_account);
    PERFORM covenant._ledger_require('p_to_account', p_to_account);
    PERFORM covenant._ledger_check_amount('p_amount_micro', p_amount_micro);
    IF p_from_account = p_to_account THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'a transfer needs two different accounts');
    END IF;
    PERFORM covenant._authorize('transfer_credits', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'from_account', p_from_account, 'to_account', p_to_account,
        'amount_micro', p_amount_micro::text, 'actor_id', p_actor_id
    );
    PERFORM covenant._lock_account(p_from_account);
    IF covenant._mutation_replay(p_mutation_id, 'transfer_credits', v_request) IS NOT NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM covenant.accounts AS a WHERE a.account_id = p_to_account) THEN
        PERFORM covenant._raise('ACCOUNT_UNKNOWN', pg_catalog.format('no account %s', p_to_account));
    END IF;
    PERFORM covenant._mutation_record(p_mutation_id, p_from_account, 'transfer_credits', p_actor_id,
                                      v_request, '{}');
    v_detail := covenant._move_credits(
        p_from_account, p_amount_micro, ARRAY[p_to_account], ARRAY[p_amount_micro],
        p_mutation_id, 'transfer_out', 'transfer_in', 'transfer'
    );
    PERFORM covenant._ledger_audit(p_from_account, p_mutation_id, 'transfer_credits', p_actor_id,
                                   (v_request - 'actor_id') || v_detail);
END;
$$;

-- The parts of p_amount for shares in basis points: each part is
-- floor(amount * bps / 10000), and the remainder (fewer micro-USD than there
-- are shares) goes one each to the largest fractional remainders, ties to
-- the earlier share (the largest-remainder method). The parts sum to the
-- whole and each is within 1 micro-USD of its exact share.
CREATE OR REPLACE FUNCTION covenant.split_by_bps(p_amount bigint, p_bps integer[])
RETURNS bigint[]
LANGUAGE sql
IMMUTABLE
STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    WITH f AS (
        SELECT
            u.n,
            pg_catalog.div(p_amount::numeric * u.bps, 10000) AS base,
            pg_catalog.mod(p_amount::numeric * u.bps, 10000) AS rem
        FROM unnest(p_bps) WITH ORDINALITY AS u (bps, n)
    ),

    r AS (
        SELECT
            f.n,
            f.base,
            row_number() OVER (ORDER BY f.rem DESC, f.n ASC) AS rk,
            p_amount - sum(f.base) OVER () AS leftover
        FROM f
    )

    SELECT pg_catalog.array_agg((r.base + CASE WHEN r.rk <= r.leftover THEN 1 ELSE 0 END)::bigint ORDER BY r.n)
    FROM r
$$;

CREATE OR REPLACE FUNCTION covenant.distribute_revenue(
    p_from_account uuid, p_amount_micro bigint, p_shares jsonb, p_actor_id text, p_mutation_id uuid
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_request jsonb;
    v_accounts uuid[];
    v_bps integer[];
    v_parts bigint[];
    v_valid boolean;
    v_sum bigint;
    v_missing uuid;
    v_detail jsonb;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_from_account', p_from_account);
    PERFORM covenant._ledger_check_amount('p_amount_micro', p_amount_micro);
    IF p_shares IS NULL OR pg_catalog.jsonb_typeof(p_shares) <> 'array'
       OR pg_catalog.jsonb_array_length(p_shares) NOT BETWEEN 1 AND 1000 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                'p_shares must be a JSON array of 1 to 1000 {"account_id", "bps"} objects');
    END IF;
    SELECT bool_and(
        pg_catalog.jsonb_typeof(s.e) = 'object'
        AND (SELECT count(*) FROM pg_catalog.jsonb_object_keys(s.e)) = 2
        AND coalesce(s.e ->> 'account_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$', FALSE)
        AND pg_catalog.jsonb_typeof(s.e -> 'bps') = 'number'
        AND coalesce(s.e ->> 'bps' ~ '^[0-9]{1,5}$', FALSE)
    ) INTO v_valid
    FROM pg_catalog.jsonb_array_elements(
        CASE WHEN pg_catalog.jsonb_typeof(p_shares) = 'array' THEN p_shares ELSE '[]' END
    ) AS s (e);
    IF NOT v_valid THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                'each share is {"account_id": "<uuid>", "bps": <integer 0..10000>}');
    END IF;
    SELECT
        pg_catalog.array_agg((s.e ->> 'account_id')::uuid ORDER BY s.n),
        pg_catalog.array_agg((s.e ->> 'bps')::integer ORDER BY s.n)
    INTO v_accounts, v_bps
    FROM pg_catalog.jsonb_array_elements(p_shares) WITH ORDINALITY AS s (e, n);
    IF EXISTS (SELECT FROM unnest(v_bps) AS b WHERE b > 10000) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'a share is at most 10000 basis points');
    END IF;
    IF (SELECT count(DISTINCT a) FROM unnest(v_accounts) AS a) <> pg_catalog.cardinality(v_accounts) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'an account appears twice in p_shares');
    END IF;
    SELECT sum(b) INTO v_sum FROM unnest(v_bps) AS b;
    IF v_sum <> 10000 THEN
        PERFORM covenant._raise('BPS_SUM_INVALID',
                                pg_catalog.format('the shares sum to %s basis points, not 10000', v_sum));
    END IF;
    PERFORM covenant._authorize('distribute_revenue', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'from_account', p_from_account, 'amount_micro', p_amount_micro::text,
        'shares', (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('account_id', u.a, 'bps', u.b) ORDER BY u.n)
            FROM unnest(v_accounts, v_bps) WITH ORDINALITY AS u (a, b, n)
        ),
        'actor_id', p_actor_id
    );
    PERFORM covenant._lock_account(p_from_account);
    IF covenant._mutation_replay(p_mutation_id, 'distribute_revenue', v_request) IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT u.a INTO v_missing FROM unnest(v_accounts) AS u (a)
    WHERE NOT EXISTS (SELECT FROM covenant.accounts AS x WHERE x.account_id = u.a)
    LIMIT 1;
    IF FOUND THEN
        PERFORM covenant._raise('ACCOUNT_UNKNOWN', pg_catalog.format('no account %s', v_missing));
    END IF;
    v_parts := covenant.split_by_bps(p_amount_micro, v_bps);
    PERFORM covenant._mutation_record(p_mutation_id, p_from_account, 'distribute_revenue', p_actor_id,
                                      v_request, '{}');
    v_detail := covenant._move_credits(
        p_from_account, p_amount_micro, v_accounts, v_parts,
        p_mutation_id, 'revenue_out', 'revenue_in', 'revenue_share'
    );
    PERFORM covenant._ledger_audit(
        p_from_account, p_mutation_id, 'distribute_revenue', p_actor_id,
        (v_request - 'actor_id') || v_detail || pg_catalog.jsonb_build_object(
            'parts', (
                SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                    'account_id', u.a, 'amount_micro', u.p::text
                ) ORDER BY u.n)
                FROM unnest(v_accounts, v_parts) WITH ORDINALITY AS u (a, p, n)
            )
        )
    );
END;
$$;

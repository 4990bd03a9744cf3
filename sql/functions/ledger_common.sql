-- The ledger's private helpers (docs/ledger.md). None is granted to anyone:
-- they run inside the governed functions, as their owner.
--
-- Every governed function follows one order, which is what makes the ledger
-- deadlock-free and idempotent:
--   1. validate the arguments (INVALID_ARGUMENT) and the actor's policy
--      (NOT_AUTHORIZED), holding nothing;
--   2. lock the one acting account's row (FOR NO KEY UPDATE): every change to
--      an account's lots and reservations happens under that lock, so they
--      need no row locks of their own, and a transaction never holds two
--      account locks (the expiry sweep takes them in account_id order);
--   3. replay: a mutation id seen before returns its stored result, or is
--      IDEMPOTENCY_CONFLICT;
--   4. change the state, record the mutation, write the journal;
--   5. append the audit entry (entry_id = mutation id, domain
--      account:<account_id>), which refuses a quarantined domain
--      (AUDIT_QUARANTINE) and so rolls everything back.
-- Other accounts are touched only by inserting their new lots (a transfer's
-- or a distribution's receiving side), whose foreign key takes KEY SHARE on
-- the account row, which never conflicts with NO KEY UPDATE.

-- CV004 unless p_actor_id is a UUID or service:<name>, and p_mutation_id is
-- given.
CREATE OR REPLACE FUNCTION covenant._ledger_check_call(p_actor_id text, p_mutation_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._check_actor_id(p_actor_id);
    IF p_mutation_id IS NULL THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_mutation_id is required');
    END IF;
END;
$$;

-- CV004 unless p_amount is a positive amount of micro-USD (or zero, when
-- p_allow_zero).
CREATE OR REPLACE FUNCTION covenant._ledger_check_amount(
    p_name text, p_amount bigint, p_allow_zero boolean DEFAULT FALSE
) RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_amount IS NULL OR p_amount < 0 OR (p_amount = 0 AND NOT p_allow_zero) THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('%s must be a %s amount of micro-USD, not %s', p_name,
                              CASE WHEN p_allow_zero THEN 'non-negative' ELSE 'positive' END,
                              coalesce(p_amount::text, 'NULL'))
        );
    END IF;
END;
$$;

-- CV004 when p_value is NULL.
CREATE OR REPLACE FUNCTION covenant._ledger_require(p_name text, p_value anyelement)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', p_name || ' is required');
    END IF;
END;
$$;

-- NOT_AUTHORIZED unless the mutation policy lets p_actor_id perform
-- p_operation.
CREATE OR REPLACE FUNCTION covenant._authorize(p_operation text, p_actor_id text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM covenant.mutation_policy AS p
        WHERE p.operation = p_operation AND p_actor_id ~ p.actor_pattern
    ) THEN
        PERFORM covenant._raise(
            'NOT_AUTHORIZED',
            pg_catalog.format('actor %s may not %s', p_actor_id, p_operation),
            NULL, 'covenant.mutation_policy lists who may perform which operation'
        );
    END IF;
END;
$$;

-- Lock one account's row for the rest of the transaction and return it;
-- ACCOUNT_UNKNOWN when there is none.
CREATE OR REPLACE FUNCTION covenant._lock_account(p_account_id uuid)
RETURNS covenant.accounts
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_account covenant.accounts;
BEGIN
    SELECT a.* INTO v_account FROM covenant.accounts AS a
    WHERE a.account_id = p_account_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM covenant._raise('ACCOUNT_UNKNOWN', pg_catalog.format('no account %s', p_account_id));
    END IF;
    RETURN v_account;
END;
$$;

-- Idempotency: the stored result when p_mutation_id was already applied to
-- the same request, IDEMPOTENCY_CONFLICT when it was applied to another,
-- NULL when it is new. Called under the account lock, so a concurrent
-- duplicate on the same account has committed (and is seen) or not started.
CREATE OR REPLACE FUNCTION covenant._mutation_replay(
    p_mutation_id uuid, p_operation text, p_request jsonb
) RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_operation text;
    v_request jsonb;
    v_result jsonb;
BEGIN
    SELECT m.operation, m.request, m.result INTO v_operation, v_request, v_result
    FROM covenant.ledger_mutations AS m WHERE m.mutation_id = p_mutation_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_operation = p_operation AND v_request = p_request THEN
        RETURN v_result;
    END IF;
    PERFORM covenant._raise(
        'IDEMPOTENCY_CONFLICT',
        pg_catalog.format('mutation %s was already applied to a different request', p_mutation_id),
        pg_catalog.format('existing: %s %s', v_operation, v_request)
    );
    RETURN NULL;
END;
$$;

-- Record the mutation. A concurrent transaction that recorded the same id
-- for another account commits first or not at all; if it did, this one is
-- IDEMPOTENCY_CONFLICT.
CREATE OR REPLACE FUNCTION covenant._mutation_record(
    p_mutation_id uuid, p_account_id uuid, p_operation text, p_actor_id text,
    p_request jsonb, p_result jsonb
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO covenant.ledger_mutations (mutation_id, account_id, operation, actor_id, request, result)
    VALUES (p_mutation_id, p_account_id, p_operation, p_actor_id, p_request, p_result)
    ON CONFLICT (mutation_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM covenant._raise(
            'IDEMPOTENCY_CONFLICT',
            pg_catalog.format('mutation %s was applied concurrently to another request', p_mutation_id)
        );
    END IF;
END;
$$;

-- The mutation's audit entry, on its account's chain, in this transaction.
-- AUDIT_QUARANTINE when the domain is quarantined (fail closed).
CREATE OR REPLACE FUNCTION covenant._ledger_audit(
    p_account_id uuid, p_mutation_id uuid, p_operation text, p_actor_id text, p_payload jsonb
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_duplicate boolean;
BEGIN
    SELECT r.duplicate INTO STRICT v_duplicate FROM covenant._audit_append_many(
        'account:' || p_account_id::text, ARRAY[p_mutation_id], ARRAY[p_operation], ARRAY[p_actor_id],
        ARRAY[p_payload], ARRAY[pg_catalog.clock_timestamp()]
    ) AS r;
    IF v_duplicate THEN
        -- unreachable while account: domains are reserved: the entry exists
        -- but the mutation record did not
        PERFORM covenant._raise(
            'IDEMPOTENCY_CONFLICT',
            pg_catalog.format('audit entry %s exists without its mutation', p_mutation_id)
        );
    END IF;
END;
$$;

-- AUDIT_QUARANTINE when a receiving account's audit domain is quarantined:
-- credits do not flow into an account whose record is under investigation
-- (its chain is the one an auditor reads for it), even though the entry goes
-- on the payer's chain.
CREATE OR REPLACE FUNCTION covenant._check_recipients_open(p_accounts uuid[])
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_domain text;
BEGIN
    SELECT q.domain_tag INTO v_domain FROM covenant.audit_quarantine AS q
    WHERE q.domain_tag = ANY(
        SELECT 'account:' || a::text FROM unnest(p_accounts) AS a
    ) AND q.state <> 'closed'
    LIMIT 1;
    IF FOUND THEN
        PERFORM covenant._raise(
            'AUDIT_QUARANTINE',
            pg_catalog.format('receiving domain %s is quarantined', v_domain),
            NULL, 'see docs/runbook.md: quarantine recovery'
        );
    END IF;
END;
$$;

-- The account's unexpired lots with a balance, drawn in order (earliest
-- expiry first, then never-expiring; ties by creation, then id) until
-- p_amount is covered. INSUFFICIENT_BALANCE when they hold less. Called
-- under the account lock.
CREATE OR REPLACE FUNCTION covenant._draw_lots(
    p_account_id uuid, p_amount bigint,
    OUT lot_ids uuid[], OUT amounts bigint[], OUT expiries timestamptz[]
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_available numeric;
BEGIN
    WITH c AS (
        SELECT
            l.lot_id,
            l.balance,
            l.expires_at,
            sum(l.balance) OVER w AS cum,
            row_number() OVER w AS n
        FROM covenant.credit_lots AS l
        WHERE l.account_id = p_account_id AND l.balance > 0
          AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now())
        WINDOW w AS (ORDER BY l.expires_at ASC NULLS LAST, l.created_at ASC, l.lot_id ASC)
    )
    SELECT
        pg_catalog.array_agg(c.lot_id ORDER BY c.n) FILTER (WHERE c.cum - c.balance < p_amount),
        pg_catalog.array_agg(least(c.balance, p_amount - (c.cum - c.balance))::bigint ORDER BY c.n)
        FILTER (WHERE c.cum - c.balance < p_amount),
        pg_catalog.array_agg(c.expires_at ORDER BY c.n) FILTER (WHERE c.cum - c.balance < p_amount),
        coalesce(max(c.cum), 0)
    INTO lot_ids, amounts, expiries, v_available
    FROM c;
    IF v_available < p_amount THEN
        PERFORM covenant._raise(
            'INSUFFICIENT_BALANCE',
            pg_catalog.format('account %s has %s micro-USD available, %s requested',
                              p_account_id, v_available, p_amount)
        );
    END IF;
END;
$$;

-- The lots drawn, as the audit payload shows them: [{"lot_id", "amount_micro"}]
-- in draw order, amounts as decimal strings.
CREATE OR REPLACE FUNCTION covenant._draw_json(p_lot_ids uuid[], p_amounts bigint[])
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'lot_id', u.lot_id, 'amount_micro', u.amount::text
    ) ORDER BY u.n)
    FROM unnest(p_lot_ids, p_amounts) WITH ORDINALITY AS u (lot_id, amount, n)
$$;

-- Resolve a pending reservation: p_actual is consumed from its lots in draw
-- order, the rest goes back to their balance (journal lines 'finalize' and
-- p_return_type). Called under the account lock, after every check.
CREATE OR REPLACE FUNCTION covenant._resolve_reservation(
    p_account_id uuid, p_reservation_id uuid, p_status text, p_actual bigint,
    p_mutation_id uuid, p_return_type text
) RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lots uuid[];
    v_held bigint[];
    v_used bigint[];
BEGIN
    WITH d AS (
        SELECT
            rl.lot_id,
            rl.draw_no,
            rl.amount_micro::bigint AS held,
            sum(rl.amount_micro) OVER (ORDER BY rl.draw_no) - rl.amount_micro AS before
        FROM covenant.reservation_lots AS rl
        WHERE rl.account_id = p_account_id AND rl.reservation_id = p_reservation_id
    )
    SELECT
        pg_catalog.array_agg(d.lot_id ORDER BY d.draw_no),
        pg_catalog.array_agg(d.held ORDER BY d.draw_no),
        pg_catalog.array_agg(greatest(0, least(d.held, p_actual - d.before))::bigint ORDER BY d.draw_no)
    INTO v_lots, v_held, v_used
    FROM d;

    UPDATE covenant.credit_lots AS l
    SET reserved = l.reserved - u.held,
        consumed = l.consumed + u.used,
        balance = l.balance + (u.held - u.used),
        status = CASE WHEN l.balance + (u.held - u.used) = 0 AND l.reserved - u.held = 0
            THEN 'exhausted' ELSE l.status END
    FROM unnest(v_lots, v_held, v_used) AS u (lot_id, held, used)
    WHERE l.account_id = p_account_id AND l.lot_id = u.lot_id;

    UPDATE covenant.credit_reservations AS r
    SET status = p_status,
        consumed_micro = p_actual,
        released_micro = r.amount_micro - p_actual,
        resolved_by = p_mutation_id,
        resolved_at = pg_catalog.now()
    WHERE r.account_id = p_account_id AND r.reservation_id = p_reservation_id;

    INSERT INTO covenant.credit_ledger
        (account_id, mutation_id, line_no, lot_id, entry_type, amount_micro, reservation_id)
    SELECT
        p_account_id, p_mutation_id,
        (row_number() OVER (ORDER BY u.n, m.k))::integer,
        u.lot_id, m.entry_type, m.amount, p_reservation_id
    FROM unnest(v_lots, v_held, v_used) WITH ORDINALITY AS u (lot_id, held, used, n)
    CROSS JOIN LATERAL (
        VALUES (1, 'finalize', u.used), (2, p_return_type, u.held - u.used)
    ) AS m (k, entry_type, amount)
    WHERE m.amount > 0;

    RETURN pg_catalog.jsonb_build_object(
        'lots', (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                'lot_id', u.lot_id, 'consumed_micro', u.used::text,
                'returned_micro', (u.held - u.used)::text
            ) ORDER BY u.n)
            FROM unnest(v_lots, v_held, v_used) WITH ORDINALITY AS u (lot_id, held, used, n)
        )
    );
END;
$$;

-- Move p_amount out of p_from's lots (journal p_out_type; the lots' consumed
-- grows) into new lots of the recipients, p_parts[i] for p_recipients[i]
-- (journal p_in_type, lot source p_source_type). Each new lot keeps the
-- expiry of the lot its credits came from: the drawn lots, in draw order,
-- are laid end to end against the parts in order, and every overlap becomes
-- a lot. Credits never outlive the lot they came from, and never flow into
-- a quarantined account (AUDIT_QUARANTINE). Called under p_from's lock with
-- sum(p_parts) = p_amount.
CREATE OR REPLACE FUNCTION covenant._move_credits(
    p_from uuid, p_amount bigint, p_recipients uuid[], p_parts bigint[],
    p_mutation_id uuid, p_out_type text, p_in_type text, p_source_type text
) RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_draw record;
    v_out integer;
    v_accounts uuid[];
    v_new_lots uuid[];
    v_amounts bigint[];
    v_expiries timestamptz[];
BEGIN
    PERFORM covenant._check_recipients_open(p_recipients);
    SELECT d.* INTO v_draw FROM covenant._draw_lots(p_from, p_amount) AS d;

    UPDATE covenant.credit_lots AS l
    SET balance = l.balance - u.amount,
        consumed = l.consumed + u.amount,
        status = CASE WHEN l.balance - u.amount = 0 AND l.reserved = 0 THEN 'exhausted' ELSE l.status END
    FROM unnest(v_draw.lot_ids, v_draw.amounts) AS u (lot_id, amount)
    WHERE l.account_id = p_from AND l.lot_id = u.lot_id;

    INSERT INTO covenant.credit_ledger (account_id, mutation_id, line_no, lot_id, entry_type, amount_micro)
    SELECT p_from, p_mutation_id, u.n::integer, u.lot_id, p_out_type, u.amount
    FROM unnest(v_draw.lot_ids, v_draw.amounts) WITH ORDINALITY AS u (lot_id, amount, n);
    v_out := pg_catalog.cardinality(v_draw.lot_ids);

    WITH d AS (
        SELECT u.amount, u.expires_at, u.n, sum(u.amount) OVER (ORDER BY u.n) - u.amount AS s
        FROM unnest(v_draw.amounts, v_draw.expiries) WITH ORDINALITY AS u (amount, expires_at, n)
    ),

    p AS (
        SELECT u.account_id, u.part, u.n, sum(u.part) OVER (ORDER BY u.n) - u.part AS s
        FROM unnest(p_recipients, p_parts) WITH ORDINALITY AS u (account_id, part, n)
        WHERE u.part > 0
    ),

    seg AS (
        SELECT
            p.account_id,
            d.expires_at,
            (least(d.s + d.amount, p.s + p.part) - greatest(d.s, p.s))::bigint AS amount,
            p.n AS pn,
            d.n AS dn
        FROM d INNER JOIN p ON d.s < p.s + p.part AND p.s < d.s + d.amount
    )

    SELECT
        pg_catalog.array_agg(seg.account_id ORDER BY seg.pn, seg.dn),
        pg_catalog.array_agg(pg_catalog.gen_random_uuid() ORDER BY seg.pn, seg.dn),
        pg_catalog.array_agg(seg.amount ORDER BY seg.pn, seg.dn),
        pg_catalog.array_agg(seg.expires_at ORDER BY seg.pn, seg.dn)
    INTO v_accounts, v_new_lots, v_amounts, v_expiries
    FROM seg;

    INSERT INTO covenant.credit_lots
        (account_id, lot_id, source_type, original_allocation, balance, expires_at, mutation_id)
    SELECT u.account_id, u.lot_id, p_source_type, u.amount, u.amount, u.expires_at, p_mutation_id
    FROM unnest(v_accounts, v_new_lots, v_amounts, v_expiries) AS u (account_id, lot_id, amount, expires_at);

    INSERT INTO covenant.credit_ledger (account_id, mutation_id, line_no, lot_id, entry_type, amount_micro)
    SELECT u.account_id, p_mutation_id, (v_out + u.n)::integer, u.lot_id, p_in_type, u.amount
    FROM unnest(v_accounts, v_new_lots, v_amounts) WITH ORDINALITY AS u (account_id, lot_id, amount, n);

    RETURN pg_catalog.jsonb_build_object(
        'from_lots', covenant._draw_json(v_draw.lot_ids, v_draw.amounts),
        'to_lots', (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                'account_id', u.account_id, 'lot_id', u.lot_id, 'amount_micro', u.amount::text,
                'expires_at', u.expires_at
            ) ORDER BY u.n)
            FROM unnest(v_accounts, v_new_lots, v_amounts, v_expiries)
                WITH ORDINALITY AS u (account_id, lot_id, amount, expires_at, n)
        )
    );
END;
$$;

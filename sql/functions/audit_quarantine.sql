-- The quarantine circuit breaker of each audit domain (docs/audit.md,
-- docs/runbook.md). States and transitions: covenant.state_transitions,
-- machine 'audit_quarantine'. Every transition is appended to the chain of
-- the system domain 'system:quarantine', which itself is never refused by
-- the breaker (its own record must always be writable).

CREATE OR REPLACE FUNCTION covenant._audit_record_system(
    p_event_type text,
    p_actor_id text,
    p_payload jsonb
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._audit_append_many(
        'system:quarantine', ARRAY[pg_catalog.gen_random_uuid()], ARRAY[p_event_type],
        ARRAY[p_actor_id], ARRAY[p_payload], ARRAY[pg_catalog.clock_timestamp()], TRUE
    );
END;
$$;

-- Move a domain's breaker to p_to and say who did it. Takes the domain's
-- lock first: transitions and appends of one domain are serialized (lock
-- order: domain, then system:quarantine). Already in p_to: nothing to do.
-- The transition itself is checked and recorded by the trigger on
-- covenant.audit_quarantine (covenant._audit_quarantine_changed), whatever
-- path the change takes.
CREATE OR REPLACE FUNCTION covenant._audit_quarantine_set(
    p_domain_tag text,
    p_to text,
    p_actor_id text,
    p_reason text,
    p_first_bad_seq bigint DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from text;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));
    SELECT q.state INTO v_from FROM covenant.audit_quarantine AS q WHERE q.domain_tag = p_domain_tag;
    IF coalesce(v_from, 'closed') = p_to THEN
        RETURN;
    END IF;
    INSERT INTO covenant.audit_quarantine AS q
        (domain_tag, state, opened_at, reason, first_bad_seq, changed_by, updated_at)
    VALUES (
        p_domain_tag, p_to,
        CASE WHEN p_to = 'open' THEN pg_catalog.clock_timestamp() END,
        p_reason, p_first_bad_seq, p_actor_id, pg_catalog.clock_timestamp()
    )
    ON CONFLICT (domain_tag) DO UPDATE SET
        state = excluded.state,
        opened_at = CASE WHEN excluded.state = 'open' THEN excluded.opened_at ELSE q.opened_at END,
        reason = coalesce(excluded.reason, q.reason),
        first_bad_seq = CASE WHEN excluded.state = 'closed' THEN NULL
                             ELSE coalesce(excluded.first_bad_seq, q.first_bad_seq) END,
        consecutive_failures = CASE WHEN excluded.state = 'closed' THEN 0
                                    ELSE q.consecutive_failures END,
        changed_by = excluded.changed_by,
        updated_at = excluded.updated_at;
END;
$$;

-- The trigger behind every change of a breaker's state, by any path (the
-- functions above, or an owner's UPDATE by hand): the transition must be in
-- the state machine, closing needs two approvals by different operators and
-- different logins, and the change is appended to system:quarantine with
-- the login that made it. Approvals are cleared on every state change.
CREATE OR REPLACE FUNCTION covenant._audit_quarantine_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from text := CASE WHEN tg_op = 'INSERT' THEN 'closed' ELSE old.state END;
    v_approving boolean;
BEGIN
    -- INSERT ... ON CONFLICT fires the INSERT trigger even when the row
    -- exists; the UPDATE that follows is the one to judge
    IF tg_op = 'INSERT' AND EXISTS (
        SELECT FROM covenant.audit_quarantine AS q WHERE q.domain_tag = new.domain_tag
    ) THEN
        RETURN new;
    END IF;
    IF tg_op = 'INSERT' AND (new.reset_approvals <> '{}' OR new.reset_logins <> '{}') THEN
        PERFORM covenant._raise('INVALID_TRANSITION', 'a new breaker carries no approvals');
    END IF;
    IF v_from = new.state THEN
        IF tg_op = 'INSERT' THEN
            RETURN new;
        END IF;
        -- Without a change of state the row's identity and history are frozen;
        -- approvals grow by one, in half_open, by a login not yet among them.
        IF new.domain_tag <> old.domain_tag OR new.first_bad_seq IS DISTINCT FROM old.first_bad_seq
           OR new.opened_at IS DISTINCT FROM old.opened_at
           OR new.reason IS DISTINCT FROM old.reason THEN
            PERFORM covenant._raise(
                'INVALID_TRANSITION',
                pg_catalog.format('the quarantine record of %s changes only with its state',
                                  old.domain_tag)
            );
        END IF;
        v_approving := new.reset_approvals IS DISTINCT FROM old.reset_approvals
            OR new.reset_logins IS DISTINCT FROM old.reset_logins;
        IF v_approving AND NOT (
            old.state = 'half_open'
            AND pg_catalog.cardinality(new.reset_approvals) = pg_catalog.cardinality(old.reset_approvals) + 1
            AND new.reset_approvals[1:pg_catalog.cardinality(old.reset_approvals)] = old.reset_approvals
            AND new.reset_logins = old.reset_logins || session_user::text
            AND NOT session_user::text = ANY(old.reset_logins)
        ) THEN
            PERFORM covenant._raise(
                'NOT_AUTHORIZED',
                pg_catalog.format('an approval of %s adds one operator, as the login giving it (%s), '
                                  'once, in half_open', old.domain_tag, session_user)
            );
        END IF;
        RETURN new;
    END IF;
    IF tg_op = 'UPDATE' AND new.domain_tag <> old.domain_tag THEN
        PERFORM covenant._raise(
            'INVALID_TRANSITION',
            pg_catalog.format('the quarantine record of %s cannot be renamed', old.domain_tag)
        );
    END IF;
    PERFORM covenant._transition('audit_quarantine', v_from, new.state);
    IF new.state = 'closed' AND (
        tg_op = 'INSERT'
        OR (SELECT count(DISTINCT a) FROM pg_catalog.unnest(old.reset_approvals) AS a) < 2
        OR (SELECT count(DISTINCT l) FROM pg_catalog.unnest(old.reset_logins) AS l) < 2
    ) THEN
        PERFORM covenant._raise(
            'INVALID_TRANSITION',
            pg_catalog.format('closing %s needs the approval of two different operators, from two '
                              'different logins', new.domain_tag)
        );
    END IF;
    PERFORM covenant._audit_record_system(
        'quarantine.' || new.state,
        coalesce(new.changed_by, 'service:unknown'),
        pg_catalog.jsonb_build_object(
            'domain_tag', new.domain_tag, 'from', v_from, 'to', new.state,
            'reason', new.reason, 'first_bad_seq', new.first_bad_seq,
            'approvals', CASE WHEN tg_op = 'UPDATE' THEN pg_catalog.to_jsonb(old.reset_approvals) END,
            'login', session_user
        )
    );
    new.reset_approvals := '{}';
    new.reset_logins := '{}';
    RETURN new;
END;
$$;

-- A detected break: open the breaker (from closed or half_open) at once.
CREATE OR REPLACE FUNCTION covenant._audit_quarantine_break(
    p_domain_tag text,
    p_first_bad_seq bigint,
    p_reason text
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- _audit_quarantine_set locks the domain and does nothing if already open
    PERFORM covenant._audit_quarantine_set(
        p_domain_tag, 'open', 'service:covenant-verifier', p_reason, p_first_bad_seq
    );
END;
$$;

-- A verification that could not complete (timeout, error) is reported here;
-- the third in a row opens the breaker. A passing verification resets it.
CREATE OR REPLACE FUNCTION covenant.record_audit_verification_failure(
    p_domain_tag text,
    p_actor_id text,
    p_reason text
) RETURNS TABLE (state text, consecutive_failures integer)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_failures integer;
    v_state text;
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_domain_tag(p_domain_tag);
    PERFORM covenant._check_actor_id(p_actor_id);
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));
    INSERT INTO covenant.audit_quarantine AS q (domain_tag, consecutive_failures, updated_at)
    VALUES (p_domain_tag, 1, pg_catalog.clock_timestamp())
    ON CONFLICT (domain_tag) DO UPDATE
    SET consecutive_failures = q.consecutive_failures + 1, updated_at = excluded.updated_at
    RETURNING q.consecutive_failures, q.state INTO v_failures, v_state;
    IF v_failures >= 3 AND v_state <> 'open' THEN
        PERFORM covenant._audit_quarantine_set(
            p_domain_tag, 'open', p_actor_id,
            pg_catalog.format('%s consecutive failed verifications; last: %s', v_failures,
                              coalesce(p_reason, 'unknown'))
        );
        v_state := 'open';
    END IF;
    RETURN QUERY SELECT v_state, v_failures;
END;
$$;

-- open -> half_open, only by an operator, and only if a probe of the last
-- p_last_n entries passes (else it stays open; the failed probe is recorded).
CREATE OR REPLACE FUNCTION covenant.approve_audit_probe(
    p_domain_tag text,
    p_operator_id text,
    p_last_n integer DEFAULT 1000
) RETURNS TABLE (state text, ok boolean, reason text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_head bigint;
    v_result covenant.audit_verification;
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_domain_tag(p_domain_tag);
    PERFORM covenant._check_actor_id(p_operator_id);
    IF p_last_n IS NULL OR p_last_n < 1 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_last_n must be 1 or more');
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));
    SELECT q.state INTO v_state FROM covenant.audit_quarantine AS q WHERE q.domain_tag = p_domain_tag;
    PERFORM covenant._transition('audit_quarantine', coalesce(v_state, 'closed'), 'half_open');
    SELECT h.seq INTO v_head FROM covenant.audit_trail_head AS h WHERE h.domain_tag = p_domain_tag;
    v_result := covenant._audit_verify(
        p_domain_tag, GREATEST(1, coalesce(v_head, 1) - p_last_n + 1)
    );
    IF NOT v_result.ok THEN
        PERFORM covenant._audit_record_system(
            'quarantine.probe_failed', p_operator_id,
            pg_catalog.jsonb_build_object('domain_tag', p_domain_tag, 'last_n', p_last_n,
                                          'first_bad_seq', v_result.first_bad_seq,
                                          'reason', v_result.reason)
        );
        RETURN QUERY SELECT 'open'::text, FALSE, v_result.reason;
        RETURN;
    END IF;
    PERFORM covenant._audit_quarantine_set(
        p_domain_tag, 'half_open', p_operator_id,
        pg_catalog.format('probe of the last %s entries passed', p_last_n)
    );
    RETURN QUERY SELECT 'half_open'::text, TRUE, NULL::text;
END;
$$;

-- half_open -> closed after two different operators approved and a full
-- verification from the last checkpoint passed; a failure reopens it.
CREATE OR REPLACE FUNCTION covenant.approve_audit_reset(
    p_domain_tag text,
    p_operator_id text
) RETURNS TABLE (state text, approvals integer, ok boolean, reason text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_approvals text [];
    v_logins text [];
    v_first_bad bigint;
    v_from bigint;
    v_result covenant.audit_verification;
BEGIN
    PERFORM covenant._require_read_committed();
    PERFORM covenant._check_domain_tag(p_domain_tag);
    PERFORM covenant._check_actor_id(p_operator_id);
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));
    SELECT q.state, q.reset_approvals, q.reset_logins, q.first_bad_seq
    INTO v_state, v_approvals, v_logins, v_first_bad
    FROM covenant.audit_quarantine AS q WHERE q.domain_tag = p_domain_tag;
    IF coalesce(v_state, 'closed') <> 'half_open' THEN
        PERFORM covenant._raise(
            'INVALID_TRANSITION',
            pg_catalog.format('domain %s is %s; a reset is approved in half_open only',
                              p_domain_tag, coalesce(v_state, 'closed'))
        );
    END IF;
    IF p_operator_id = ANY(v_approvals) OR session_user::text = ANY(v_logins) THEN
        PERFORM covenant._raise(
            'NOT_AUTHORIZED',
            pg_catalog.format('%s (login %s) already approved this reset; a second operator, '
                              'from another login, must', p_operator_id, session_user)
        );
    END IF;
    v_approvals := v_approvals || p_operator_id;
    v_logins := v_logins || session_user::text;
    UPDATE covenant.audit_quarantine AS q
    SET reset_approvals = v_approvals, reset_logins = v_logins,
        updated_at = pg_catalog.clock_timestamp()
    WHERE q.domain_tag = p_domain_tag;
    IF pg_catalog.cardinality(v_approvals) < 2 THEN
        PERFORM covenant._audit_record_system(
            'quarantine.reset_approved', p_operator_id,
            pg_catalog.jsonb_build_object('domain_tag', p_domain_tag, 'approvals', v_approvals,
                                          'login', session_user)
        );
        RETURN QUERY SELECT 'half_open'::text, pg_catalog.cardinality(v_approvals), NULL::boolean,
                            'waiting for a second operator'::text;
        RETURN;
    END IF;
    -- from the last checkpoint, or from the recorded break if that lies
    -- behind it (a break under a checkpoint must be repaired, not skipped)
    SELECT max(c.seq) + 1 INTO v_from FROM covenant.audit_trail_checkpoints AS c
    WHERE c.domain_tag = p_domain_tag;
    IF v_first_bad IS NOT NULL AND v_first_bad < coalesce(v_from, 1) THEN
        v_from := v_first_bad;
    END IF;
    v_result := covenant._audit_verify(p_domain_tag, v_from);
    -- recorded after the verification: the system chain's lock (shared by
    -- every domain's transitions) is held from here to commit only
    PERFORM covenant._audit_record_system(
        'quarantine.reset_approved', p_operator_id,
        pg_catalog.jsonb_build_object('domain_tag', p_domain_tag, 'approvals', v_approvals,
                                      'login', session_user)
    );
    IF v_result.ok THEN
        PERFORM covenant._audit_quarantine_set(
            p_domain_tag, 'closed', p_operator_id,
            pg_catalog.format('reset approved by %s', pg_catalog.array_to_string(v_approvals, ', '))
        );
        RETURN QUERY SELECT 'closed'::text, pg_catalog.cardinality(v_approvals), TRUE, NULL::text;
    ELSE
        PERFORM covenant._audit_quarantine_set(
            p_domain_tag, 'open', p_operator_id, v_result.reason, v_result.first_bad_seq
        );
        RETURN QUERY SELECT 'open'::text, pg_catalog.cardinality(v_approvals), FALSE, v_result.reason;
    END IF;
END;
$$;

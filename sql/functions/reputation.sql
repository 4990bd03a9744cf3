-- Reputation (docs/ledger.md#reputation). The score is an exponential moving
-- average in basis points, integer arithmetic only:
--     score' = score + round((observation - score) * 2000 / 10000)
-- (alpha = 0.2, round half away from zero). The state is the highest of
-- covenant.reputation_states whose thresholds (score and scored events) are
-- met, reached one step up per event, while a downgrade is immediate. Every
-- state change is NOTIFYed on channel covenant_reputation (at commit) as
-- {"agent_id", "from", "to", "direction", "score_bps"}, so resolvers can drop
-- a cached surface at once.
CREATE OR REPLACE FUNCTION covenant.record_reputation_event(
    p_agent_id uuid,
    p_event_type text,
    p_observation_bps integer,
    p_actor_id text,
    p_mutation_id uuid,
    p_task_type text DEFAULT NULL,
    p_payload jsonb DEFAULT '{}'
) RETURNS covenant.reputation_outcome
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_alpha CONSTANT integer := 2000;
    v_scored boolean;
    v_request jsonb;
    v_result jsonb;
    v_account covenant.accounts;
    v_rep covenant.agent_reputation;
    v_rank integer;
    v_target_rank integer;
    v_score integer;
    v_events bigint;
    v_state text;
    v_outcome covenant.reputation_outcome;
BEGIN
    PERFORM covenant._ledger_check_call(p_actor_id, p_mutation_id);
    PERFORM covenant._ledger_require('p_agent_id', p_agent_id);
    SELECT t.scored INTO v_scored FROM covenant.reputation_event_types AS t WHERE t.event_type = p_event_type;
    IF NOT FOUND THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('unknown reputation event type %s',
                              coalesce(pg_catalog.quote_literal(pg_catalog.left(p_event_type, 40)), 'NULL')),
            NULL, 'covenant.reputation_event_types lists them'
        );
    END IF;
    IF v_scored AND (p_observation_bps IS NULL OR p_observation_bps NOT BETWEEN 0 AND 10000) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', pg_catalog.format(
            'a %s event carries an observation of 0..10000 basis points, not %s',
            p_event_type, coalesce(p_observation_bps::text, 'NULL')));
    END IF;
    IF NOT v_scored AND p_observation_bps IS NOT NULL THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('a %s event carries no observation', p_event_type));
    END IF;
    IF p_task_type IS NOT NULL AND p_task_type !~ '^[a-z0-9][a-z0-9_.:-]{0,63}$' THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_task_type must match ^[a-z0-9][a-z0-9_.:-]{0,63}$');
    END IF;
    IF p_payload IS NULL OR pg_catalog.jsonb_typeof(p_payload) <> 'object'
       OR pg_catalog.octet_length(p_payload::text) > 65536 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_payload must be a JSON object of at most 64 KiB');
    END IF;
    PERFORM covenant._authorize('record_reputation_event', p_actor_id);
    v_request := pg_catalog.jsonb_build_object(
        'agent_id', p_agent_id, 'event_type', p_event_type, 'observation_bps', p_observation_bps,
        'task_type', p_task_type, 'payload', p_payload, 'actor_id', p_actor_id
    );
    v_account := covenant._lock_account(p_agent_id);
    v_result := covenant._mutation_replay(p_mutation_id, 'record_reputation_event', v_request);
    IF v_result IS NOT NULL THEN
        RETURN pg_catalog.jsonb_populate_record(NULL::covenant.reputation_outcome, v_result);
    END IF;
    IF v_account.kind <> 'agent' THEN
        PERFORM covenant._raise('INVALID_ARGUMENT',
                                pg_catalog.format('account %s is a %s, not an agent', p_agent_id, v_account.kind));
    END IF;
    SELECT r.* INTO STRICT v_rep FROM covenant.agent_reputation AS r WHERE r.agent_id = p_agent_id;
    v_score := v_rep.score_bps;
    v_events := v_rep.event_count;
    v_state := v_rep.state;
    IF v_scored THEN
        v_score := v_score + round((p_observation_bps - v_score)::numeric * c_alpha / 10000)::integer;
        v_events := v_events + 1;
        SELECT s.rank INTO STRICT v_rank FROM covenant.reputation_states AS s WHERE s.state = v_rep.state;
        SELECT max(s.rank) INTO v_target_rank FROM covenant.reputation_states AS s
        WHERE v_score >= s.min_score_bps AND v_events >= s.min_events;
        IF v_target_rank > v_rank THEN
            v_target_rank := v_rank + 1;
        END IF;
        SELECT s.state INTO STRICT v_state FROM covenant.reputation_states AS s WHERE s.rank = v_target_rank;
        UPDATE covenant.agent_reputation AS r
        SET score_bps = v_score, event_count = v_events, state = v_state, updated_at = pg_catalog.now()
        WHERE r.agent_id = p_agent_id;
        IF p_task_type IS NOT NULL AND p_task_type <> 'unspecified' THEN
            INSERT INTO covenant.agent_task_reputation AS t (agent_id, task_type, score_bps, event_count)
            VALUES (
                p_agent_id, p_task_type,
                round(p_observation_bps::numeric * c_alpha / 10000)::integer, 1
            )
            ON CONFLICT (agent_id, task_type) DO UPDATE
            SET score_bps = t.score_bps + round((p_observation_bps - t.score_bps)::numeric * c_alpha / 10000)::integer,
                event_count = t.event_count + 1,
                updated_at = pg_catalog.now();
        END IF;
    END IF;
    v_outcome := ROW(p_agent_id, v_score, v_state, v_rep.state, v_events)::covenant.reputation_outcome;
    PERFORM covenant._mutation_record(p_mutation_id, p_agent_id, 'record_reputation_event', p_actor_id,
                                      v_request, pg_catalog.to_jsonb(v_outcome));
    PERFORM covenant._ledger_audit(
        p_agent_id, p_mutation_id, 'record_reputation_event', p_actor_id,
        (v_request - 'actor_id') || pg_catalog.jsonb_build_object(
            'score_bps', v_score, 'state', v_state, 'previous_state', v_rep.state, 'event_count', v_events
        )
    );
    IF v_state <> v_rep.state THEN
        PERFORM pg_catalog.pg_notify('covenant_reputation', pg_catalog.jsonb_build_object(
            'agent_id', p_agent_id, 'from', v_rep.state, 'to', v_state,
            'direction', CASE WHEN v_target_rank < v_rank THEN 'downgrade' ELSE 'upgrade' END,
            'score_bps', v_score
        )::text);
    END IF;
    RETURN v_outcome;
END;
$$;

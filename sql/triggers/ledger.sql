-- The ledger's protections (docs/ledger.md).
--
-- The journal, the mutation record and the redeemed usage tokens are
-- append-only (JOURNAL_APPEND_ONLY), and the state columns of lots,
-- reservations and reputations change only along their state machines
-- (INVALID_TRANSITION), whoever writes them. All ENABLE ALWAYS.

CREATE OR REPLACE FUNCTION covenant._ledger_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM covenant._raise(
        'JOURNAL_APPEND_ONLY',
        pg_catalog.format('%s on %I.%I is refused', tg_op, tg_table_schema, tg_table_name),
        NULL,
        'the ledger journal is append-only: correct it with a new mutation'
    );
    RETURN NULL;
END;
$$;

-- TG_ARGV[0]: the machine of covenant.state_transitions.
CREATE OR REPLACE FUNCTION covenant._ledger_transition()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tg_table_name = 'agent_reputation' THEN
        PERFORM covenant._transition(tg_argv[0], old.state, new.state);
    ELSE
        PERFORM covenant._transition(tg_argv[0], old.status, new.status);
    END IF;
    RETURN new;
END;
$$;

DO $protect$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['credit_ledger', 'ledger_mutations', 'usage_tokens'] LOOP
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE UPDATE OR DELETE ON covenant.%I '
            'FOR EACH ROW EXECUTE FUNCTION covenant._ledger_refuse_change()',
            v || '_append_only', v
        );
        EXECUTE pg_catalog.format(
            'ALTER TABLE covenant.%I ENABLE ALWAYS TRIGGER %I', v, v || '_append_only'
        );
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON covenant.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION covenant._ledger_refuse_change()',
            v || '_no_truncate', v
        );
        EXECUTE pg_catalog.format(
            'ALTER TABLE covenant.%I ENABLE ALWAYS TRIGGER %I', v, v || '_no_truncate'
        );
    END LOOP;
END
$protect$;

CREATE OR REPLACE TRIGGER credit_lots_transition
BEFORE UPDATE OF status ON covenant.credit_lots
FOR EACH ROW WHEN (old.status IS DISTINCT FROM new.status)
EXECUTE FUNCTION covenant._ledger_transition('lot');
ALTER TABLE covenant.credit_lots ENABLE ALWAYS TRIGGER credit_lots_transition;

CREATE OR REPLACE TRIGGER credit_reservations_transition
BEFORE UPDATE OF status ON covenant.credit_reservations
FOR EACH ROW WHEN (old.status IS DISTINCT FROM new.status)
EXECUTE FUNCTION covenant._ledger_transition('reservation');
ALTER TABLE covenant.credit_reservations ENABLE ALWAYS TRIGGER credit_reservations_transition;

CREATE OR REPLACE TRIGGER agent_reputation_transition
BEFORE UPDATE OF state ON covenant.agent_reputation
FOR EACH ROW WHEN (old.state IS DISTINCT FROM new.state)
EXECUTE FUNCTION covenant._ledger_transition('reputation');
ALTER TABLE covenant.agent_reputation ENABLE ALWAYS TRIGGER agent_reputation_transition;

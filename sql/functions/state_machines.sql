-- State machines are data (covenant.state_transitions); this is the one check.
-- CV013 unless machine p_machine may go from p_from to p_to.
CREATE OR REPLACE FUNCTION covenant._transition(p_machine text, p_from text, p_to text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM covenant.state_transitions AS t
        WHERE t.machine = p_machine AND t.from_state = p_from AND t.to_state = p_to
    ) THEN
        PERFORM covenant._raise(
            'INVALID_TRANSITION',
            pg_catalog.format('%s cannot go from %s to %s', p_machine, p_from, p_to)
        );
    END IF;
END;
$$;

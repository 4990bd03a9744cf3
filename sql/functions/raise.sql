-- covenant._raise: raise a covenant domain error by name.
-- The SQLSTATE comes from covenant.error_codes, so a code is never typed by
-- hand in a function body. Private: not granted to covenant_app; called from
-- governed (SECURITY DEFINER) functions owned by covenant_migrator.
CREATE OR REPLACE FUNCTION covenant._raise(
    p_name text,
    p_message text,
    p_detail text DEFAULT NULL,
    p_hint text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_code text;
BEGIN
    SELECT e.code INTO v_code FROM covenant.error_codes AS e WHERE e.name = p_name;
    IF v_code IS NULL THEN
        -- A programming error in covenant itself, not a user error.
        RAISE EXCEPTION 'covenant._raise: unknown error name %', p_name
            USING ERRCODE = 'P0004';
    END IF;
    -- RAISE options cannot be NULL, and an empty DETAIL/HINT would still print.
    IF p_detail IS NULL AND p_hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = p_name || ': ' || coalesce(p_message, '');
    ELSIF p_hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = p_name || ': ' || coalesce(p_message, ''),
            DETAIL = p_detail;
    ELSIF p_detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = p_name || ': ' || coalesce(p_message, ''),
            HINT = p_hint;
    ELSE
        RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = p_name || ': ' || coalesce(p_message, ''),
            DETAIL = p_detail, HINT = p_hint;
    END IF;
END;
$$;

-- The canonical hash, version 1 (docs/audit.md, byte for byte). A contract:
-- the Python offline verifier (covenant.verify) is a second implementation,
-- held to this one by the conformance vectors in conformance/.
--
-- pg_catalog.sha256 is PostgreSQL's built-in SHA-256 (byte-identical to
-- pgcrypto's digest(x, 'sha256'); a test compares them). Using the built-in
-- keeps the function independent of the schema pgcrypto was installed in.
-- IMMUTABLE is true: to_char with this format is locale-independent.
CREATE OR REPLACE FUNCTION covenant.audit_entry_hash_v1(
    p_domain_tag text,
    p_seq bigint,
    p_entry_id uuid,
    p_event_type text,
    p_actor_id text,
    p_event_time timestamptz,
    p_previous_hash bytea,
    p_payload jsonb
) RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT pg_catalog.sha256(pg_catalog.convert_to(
        'covenant.audit.v1' || E'\n'
        || p_domain_tag || E'\n'
        || p_seq::text || E'\n'
        || p_entry_id::text || E'\n'
        || p_event_type || E'\n'
        || p_actor_id || E'\n'
        || pg_catalog.to_char(p_event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || E'\n'
        || pg_catalog.encode(p_previous_hash, 'hex') || E'\n'
        || p_payload::text,
        'UTF8'
    ))
$$;

-- The advisory-lock key of a domain's chain: 64 bits of its tag, so
-- different domains practically never share a lock.
CREATE OR REPLACE FUNCTION covenant._audit_lock_key(p_domain_tag text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT pg_catalog.hashtextextended('covenant.audit/' || p_domain_tag, 0)
$$;

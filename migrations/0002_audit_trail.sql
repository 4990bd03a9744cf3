-- 0002 audit trail: the per-domain SHA-256 hash chain (docs/audit.md).
-- Tables, types and data only; the functions that write them live in
-- sql/functions, their protections in sql/triggers and sql/policies.

INSERT INTO covenant.error_codes (code, name, meaning, retryable, http_status) VALUES
(
    'CV018', 'ISOLATION_LEVEL_UNSUPPORTED',
    'covenant''s appends and governed mutations run in READ COMMITTED; the calling transaction '
    || 'is REPEATABLE READ or SERIALIZABLE.',
    FALSE, 400
),
(
    'CV019', 'AUDIT_APPEND_ONLY',
    'The audit record is append-only: UPDATE, DELETE and TRUNCATE are refused.',
    FALSE, 403
);

-- What an append returns.
CREATE TYPE covenant.audit_receipt AS (
    entry_id uuid,
    domain_tag text,
    seq bigint,
    previous_hash bytea,
    entry_hash bytea,
    created_at timestamptz,
    duplicate boolean
);

-- What a verification returns.
CREATE TYPE covenant.audit_verification AS (
    ok boolean,
    checked bigint,
    first_bad_seq bigint,
    reason text
);

-- The entries. created_at is the server clock at insertion (taken after the
-- domain lock, so it grows with seq), the partition key, and NOT hashed;
-- event_time is the caller's clock, hashed, and within 5 minutes of it.
CREATE TABLE covenant.audit_trail (
    entry_id uuid NOT NULL,
    domain_tag text NOT NULL,
    seq bigint NOT NULL,
    event_type text NOT NULL,
    actor_id text NOT NULL,
    payload jsonb NOT NULL,
    event_time timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    previous_hash bytea NOT NULL,
    entry_hash bytea NOT NULL,
    hash_version smallint NOT NULL DEFAULT 1,
    CONSTRAINT audit_trail_pkey PRIMARY KEY (domain_tag, seq, created_at),
    CONSTRAINT audit_trail_domain_tag_format
    CHECK (domain_tag ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'),
    CONSTRAINT audit_trail_event_type_format
    CHECK (event_type ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'),
    CONSTRAINT audit_trail_actor_id_format CHECK (
        actor_id ~ '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|service:[a-z0-9][a-z0-9_.-]{0,63})$'
    ),
    CONSTRAINT audit_trail_seq_positive CHECK (seq >= 1),
    CONSTRAINT audit_trail_previous_hash_sha256 CHECK (octet_length(previous_hash) = 32),
    CONSTRAINT audit_trail_entry_hash_sha256 CHECK (octet_length(entry_hash) = 32),
    CONSTRAINT audit_trail_hash_version_known CHECK (hash_version = 1),
    CONSTRAINT event_time_skew CHECK (
        event_time >= created_at - interval '5 minutes'
        AND event_time <= created_at + interval '5 minutes'
    )
) PARTITION BY RANGE (created_at);

-- Rows whose month has no partition land here; partition health reports them.
CREATE TABLE covenant.audit_trail_default PARTITION OF covenant.audit_trail DEFAULT;

-- The current month and the next two (UTC). Later months are created by
-- covenant.create_audit_partitions (sql/functions/audit_partitions.sql).
DO $partitions$
DECLARE
    v_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    v_from date;
    v_to date;
BEGIN
    FOR i IN 0..2 LOOP
        v_from := (v_month + make_interval(months => i))::date;
        v_to := (v_month + make_interval(months => i + 1))::date;
        EXECUTE format(
            'CREATE TABLE covenant.%I PARTITION OF covenant.audit_trail FOR VALUES FROM (%L) TO (%L)',
            'audit_trail_p' || to_char(v_from, 'YYYYMM'),
            v_from::text || ' 00:00:00+00',
            v_to::text || ' 00:00:00+00'
        );
    END LOOP;
END
$partitions$;

-- One row per entry, in one unpartitioned table: uniqueness across all
-- partitions. No fork (one successor per hash), no two entries at one seq,
-- one use per entry_id (idempotency).
CREATE TABLE covenant.audit_trail_chain_links (
    domain_tag text NOT NULL,
    seq bigint NOT NULL,
    entry_id uuid NOT NULL,
    previous_hash bytea NOT NULL,
    entry_hash bytea NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT audit_chain_links_pkey PRIMARY KEY (domain_tag, seq),
    CONSTRAINT audit_chain_links_no_fork UNIQUE (domain_tag, previous_hash),
    CONSTRAINT audit_chain_links_entry_id_unique UNIQUE (entry_id),
    CONSTRAINT audit_chain_links_seq_positive CHECK (seq >= 1)
);

-- The linearization point: the last entry of each domain.
CREATE TABLE covenant.audit_trail_head (
    domain_tag text PRIMARY KEY,
    seq bigint NOT NULL CONSTRAINT audit_trail_head_seq_positive CHECK (seq >= 1),
    entry_id uuid NOT NULL,
    entry_hash bytea NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE covenant.audit_trail_checkpoints (
    domain_tag text NOT NULL,
    seq bigint NOT NULL,
    entry_hash bytea NOT NULL,
    entry_count bigint NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT audit_trail_checkpoints_pkey PRIMARY KEY (domain_tag, seq),
    CONSTRAINT audit_trail_checkpoints_reason_known CHECK (reason IN ('manual', 'retention')),
    CONSTRAINT audit_trail_checkpoints_count CHECK (entry_count = seq)
);

-- Partitions detached by retention: sealed by a checkpoint of every domain
-- with rows in them, with a checksum of their rows.
CREATE TABLE covenant.audit_trail_retention (
    partition_name text PRIMARY KEY,
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    row_count bigint NOT NULL,
    checksum text NOT NULL CONSTRAINT audit_trail_retention_checksum_sha256
    CHECK (checksum ~ '^[0-9a-f]{64}$'),
    sealed jsonb NOT NULL,
    detached_by text NOT NULL,
    detached_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- State machines as data (docs/state-machines.md); covenant._transition()
-- refuses any transition not listed here with INVALID_TRANSITION.
CREATE TABLE covenant.state_transitions (
    machine text NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    description text NOT NULL,
    CONSTRAINT state_transitions_pkey PRIMARY KEY (machine, from_state, to_state)
);

INSERT INTO covenant.state_transitions (machine, from_state, to_state, description) VALUES
('audit_quarantine', 'closed', 'open', 'a detected break, or 3 consecutive failed verifications'),
('audit_quarantine', 'open', 'half_open', 'an operator approved a probe and it passed'),
('audit_quarantine', 'half_open', 'open', 'a probe or the reset verification failed'),
(
    'audit_quarantine', 'half_open', 'closed',
    'two different operators approved and a full verification from the last checkpoint passed'
);

-- The quarantine circuit breaker of each domain (no row: closed).
CREATE TABLE covenant.audit_quarantine (
    domain_tag text PRIMARY KEY,
    state text NOT NULL DEFAULT 'closed'
    CONSTRAINT audit_quarantine_state_known CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0
    CONSTRAINT audit_quarantine_failures_nonnegative CHECK (consecutive_failures >= 0),
    opened_at timestamptz,
    reason text,
    first_bad_seq bigint,
    reset_approvals text[] NOT NULL DEFAULT '{}',
    -- the database logins (session_user) behind reset_approvals: two
    -- different operators means two different logins too
    reset_logins text[] NOT NULL DEFAULT '{}',
    -- the actor behind the last change (recorded on system:quarantine)
    changed_by text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Audit tables: row-level security on, and forced (it binds the owner too).
-- The policies (INSERT and SELECT only; UPDATE on the head) are in
-- sql/policies/audit.sql.
ALTER TABLE covenant.audit_trail ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail FORCE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_chain_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_chain_links FORCE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_head ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_head FORCE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_checkpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_trail_retention FORCE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_quarantine ENABLE ROW LEVEL SECURITY;
ALTER TABLE covenant.audit_quarantine FORCE ROW LEVEL SECURITY;

-- One row per domain: its head, last checkpoint and quarantine state.
-- security_invoker (PostgreSQL 15+): the reader's own privileges and
-- policies apply. PostgreSQL 14 has no such option; there the view runs as
-- its owner, which exposes nothing covenant_app cannot read directly.
DO $view$
DECLARE
    v_options text := CASE WHEN current_setting('server_version_num')::integer >= 150000
        THEN ' WITH (security_invoker = TRUE)' ELSE '' END;
BEGIN
    EXECUTE 'CREATE VIEW covenant.audit_domains' || v_options || ' AS ' || $body$
SELECT
    h.domain_tag,
    h.seq AS head_seq,
    h.entry_hash AS head_hash,
    h.updated_at,
    q.reason AS quarantine_reason,
    q.first_bad_seq,
    (
        SELECT max(c.seq) FROM covenant.audit_trail_checkpoints AS c
        WHERE c.domain_tag = h.domain_tag
    ) AS last_checkpoint_seq,
    coalesce(q.state, 'closed') AS quarantine_state
FROM covenant.audit_trail_head AS h
LEFT JOIN covenant.audit_quarantine AS q ON h.domain_tag = q.domain_tag
$body$;
END
$view$;

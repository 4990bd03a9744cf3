-- 0003 credit ledger: money types, type catalogues, accounts, lots,
-- reservations, the journal, the mutation record, reputation, usage tokens,
-- the mutation policy and the invariant catalogue (docs/ledger.md,
-- docs/invariants.md). Tables, types and data only; the governed functions
-- live in sql/functions/ledger_*.sql.

INSERT INTO covenant.error_codes (code, name, meaning, retryable, http_status) VALUES
(
    'CV020', 'USAGE_REPLAY',
    'This usage report (jti) was already redeemed; a report finalizes at most once.',
    FALSE, 409
),
(
    'CV021', 'ACCOUNT_EXISTS',
    'An account with this id already exists (created by another mutation).',
    FALSE, 409
),
(
    'CV022', 'JOURNAL_APPEND_ONLY',
    'The ledger journal, the mutation record and the usage tokens are append-only: '
    || 'UPDATE, DELETE and TRUNCATE are refused.',
    FALSE, 403
);

-- Money: integer micro-USD, never negative; shares in basis points.
CREATE DOMAIN covenant.micro_usd AS bigint
CONSTRAINT micro_usd_nonnegative CHECK (value >= 0);

CREATE DOMAIN covenant.basis_points AS integer
CONSTRAINT basis_points_range CHECK (value BETWEEN 0 AND 10000);

-- Type catalogues: one source of truth each, enforced by foreign keys and
-- mirrored in python/covenant/catalogue.py (a test compares them).
CREATE TABLE covenant.account_kinds (
    kind text PRIMARY KEY CONSTRAINT account_kinds_kind_format CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    description text NOT NULL,
    -- the receivable bound a new account of this kind starts with (NULL: none)
    default_receivable_bound_micro covenant.micro_usd
);

INSERT INTO covenant.account_kinds (kind, description, default_receivable_bound_micro) VALUES
('user', 'a person or organisation that buys credits', NULL),
('agent', 'an autonomous agent that spends credits and earns revenue; has a reputation', NULL),
('platform', 'the operator''s revenue account', NULL),
('treasury', 'holds the funds that back grants (I-13)', NULL);

-- How each journal entry type moves a lot. The signs say what one line of
-- amount a does to (original_allocation, balance, reserved, consumed); the
-- CHECK proves every type conserves a lot on its own. flow classifies the
-- line for platform conservation (I-4): mint (money entering), hold (inside a
-- lot), spend (finalized usage), move_out / move_in (between accounts).
CREATE TABLE covenant.ledger_entry_types (
    entry_type text PRIMARY KEY
    CONSTRAINT ledger_entry_types_format CHECK (entry_type ~ '^[a-z][a-z_]{0,31}$'),
    description text NOT NULL,
    flow text NOT NULL
    CONSTRAINT ledger_entry_types_flow_known CHECK (flow IN ('mint', 'hold', 'spend', 'move_out', 'move_in')),
    allocation_sign smallint NOT NULL,
    balance_sign smallint NOT NULL,
    reserved_sign smallint NOT NULL,
    consumed_sign smallint NOT NULL,
    CONSTRAINT ledger_entry_types_signs CHECK (
        allocation_sign BETWEEN -1 AND 1 AND balance_sign BETWEEN -1 AND 1
        AND reserved_sign BETWEEN -1 AND 1 AND consumed_sign BETWEEN -1 AND 1
    ),
    CONSTRAINT ledger_entry_types_conserve
    CHECK (allocation_sign = balance_sign + reserved_sign + consumed_sign)
);

INSERT INTO covenant.ledger_entry_types
(entry_type, description, flow, allocation_sign, balance_sign, reserved_sign, consumed_sign)
VALUES
('deposit', 'a lot opened by a paid deposit', 'mint', 1, 1, 0, 0),
('grant', 'a lot opened by a grant (backed by the treasury, I-13)', 'mint', 1, 1, 0, 0),
('reserve', 'balance set aside for a reservation', 'hold', 0, -1, 1, 0),
('finalize', 'reserved credits consumed by a finalized reservation', 'spend', 0, 0, -1, 1),
('release', 'reserved credits returned to balance (finalize remainder or release)', 'hold', 0, 1, -1, 0),
('expire', 'reserved credits returned to balance by the expiry sweep', 'hold', 0, 1, -1, 0),
('transfer_out', 'balance moved out of the paying account''s lot', 'move_out', 0, -1, 0, 1),
('transfer_in', 'a lot opened in the receiving account by a transfer', 'move_in', 1, 1, 0, 0),
('revenue_out', 'balance moved out of the paying account''s lot by a distribution', 'move_out', 0, -1, 0, 1),
('revenue_in', 'a lot opened in a recipient account by a distribution', 'move_in', 1, 1, 0, 0);

CREATE TABLE covenant.lot_source_types (
    source_type text PRIMARY KEY
    CONSTRAINT lot_source_types_format CHECK (source_type ~ '^[a-z][a-z_]{0,31}$'),
    description text NOT NULL,
    -- may allocate_credits open a lot of this type (the others are opened by
    -- transfers and distributions only)
    allocatable boolean NOT NULL,
    -- the journal line that opens a lot of this type
    opening_entry_type text NOT NULL
    CONSTRAINT lot_source_types_opening_entry_type_fkey
    REFERENCES covenant.ledger_entry_types (entry_type)
);

INSERT INTO covenant.lot_source_types (source_type, description, allocatable, opening_entry_type) VALUES
('deposit', 'credits bought with money', TRUE, 'deposit'),
('grant', 'credits granted by the platform', TRUE, 'grant'),
('transfer', 'credits received from another account', FALSE, 'transfer_in'),
('revenue_share', 'credits received from a revenue distribution', FALSE, 'revenue_in');

-- The governed operations: the mutation policy and the mutation record name
-- them; each is also the event_type of its audit entry.
CREATE TABLE covenant.ledger_operations (
    operation text PRIMARY KEY
    CONSTRAINT ledger_operations_format CHECK (operation ~ '^[a-z][a-z_]{0,63}$'),
    description text NOT NULL
);

INSERT INTO covenant.ledger_operations (operation, description) VALUES
('create_account', 'open an account of a kind'),
('set_receivable_bound', 'set or clear an account''s receivable bound (I-3)'),
('allocate_credits', 'open a deposit or grant lot'),
('reserve_credits', 'set credits aside for a job'),
('finalize_reservation', 'consume the actual cost of a job, return the rest'),
('release_reservation', 'return a reservation in full'),
('expire_reservation', 'return an overdue reservation in full (the expiry sweep)'),
('finalize_usage_report', 'finalize a reservation from a signed usage report (jti used once)'),
('transfer_credits', 'move available credits to another account'),
('distribute_revenue', 'split available credits among accounts by basis points'),
('record_reputation_event', 'fold an observation into an agent''s reputation');

-- Who may do what: an actor may perform an operation if it matches one of
-- the operation's patterns (a POSIX regular expression). Checked inside every
-- governed function (NOT_AUTHORIZED); changed by a migration, not at runtime.
CREATE TABLE covenant.mutation_policy (
    operation text NOT NULL
    CONSTRAINT mutation_policy_operation_fkey REFERENCES covenant.ledger_operations (operation),
    actor_pattern text NOT NULL
    CONSTRAINT mutation_policy_actor_pattern_anchored CHECK (actor_pattern LIKE '^%'),
    description text NOT NULL,
    CONSTRAINT mutation_policy_pkey PRIMARY KEY (operation, actor_pattern)
);

INSERT INTO covenant.mutation_policy (operation, actor_pattern, description) VALUES
('create_account', '^service:', 'services open accounts'),
('set_receivable_bound', '^service:', 'services set risk limits'),
('allocate_credits', '^service:', 'services (billing) allocate credits'),
('reserve_credits', '^', 'any authenticated actor'),
('finalize_reservation', '^', 'any authenticated actor'),
('release_reservation', '^', 'any authenticated actor'),
('expire_reservation', '^service:covenant\.expiry$', 'only the expiry sweep'),
('finalize_usage_report', '^service:', 'services that verified a signed usage report'),
('transfer_credits', '^', 'any authenticated actor'),
('distribute_revenue', '^service:', 'services (settlement) distribute revenue'),
('record_reputation_event', '^service:', 'services (the event router) record reputation');

CREATE TABLE covenant.accounts (
    account_id uuid PRIMARY KEY,
    kind text NOT NULL CONSTRAINT accounts_kind_fkey REFERENCES covenant.account_kinds (kind),
    -- I-3: the most this account may have reserved by pending reservations
    -- at once (NULL: no bound)
    receivable_bound_micro covenant.micro_usd,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The idempotency record: one row per applied mutation. A mutation id is used
-- once (I-6); its request and result are kept so a retry gets the same
-- answer, and a different request with the same id is IDEMPOTENCY_CONFLICT.
-- Its audit entry has entry_id = mutation_id on domain account:<account_id>
-- (I-14).
CREATE TABLE covenant.ledger_mutations (
    mutation_id uuid CONSTRAINT ledger_mutations_pkey PRIMARY KEY,
    account_id uuid NOT NULL
    CONSTRAINT ledger_mutations_account_fkey REFERENCES covenant.accounts (account_id),
    operation text NOT NULL
    CONSTRAINT ledger_mutations_operation_fkey REFERENCES covenant.ledger_operations (operation),
    actor_id text NOT NULL CONSTRAINT ledger_mutations_actor_id_format CHECK (
        actor_id ~ '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|service:[a-z0-9][a-z0-9_.-]{0,63})$'
    ),
    request jsonb NOT NULL,
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ledger_mutations_account_idx ON covenant.ledger_mutations (account_id);

-- Lots: every credit lives in one. Conservation and non-negativity are
-- CHECKs (I-1, I-2); status follows the amounts (an exhausted lot has
-- nothing left to give or return) and its changes follow the lot machine.
CREATE TABLE covenant.credit_lots (
    account_id uuid NOT NULL
    CONSTRAINT credit_lots_account_fkey REFERENCES covenant.accounts (account_id),
    lot_id uuid NOT NULL,
    source_type text NOT NULL
    CONSTRAINT credit_lots_source_type_fkey REFERENCES covenant.lot_source_types (source_type),
    original_allocation covenant.micro_usd NOT NULL,
    balance covenant.micro_usd NOT NULL,
    reserved covenant.micro_usd NOT NULL DEFAULT 0,
    consumed covenant.micro_usd NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'active',
    expires_at timestamptz,
    mutation_id uuid NOT NULL
    CONSTRAINT credit_lots_mutation_fkey REFERENCES covenant.ledger_mutations (mutation_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_lots_pkey PRIMARY KEY (account_id, lot_id),
    CONSTRAINT lot_conservation CHECK (balance + reserved + consumed = original_allocation),
    CONSTRAINT lot_nonnegative CHECK (balance >= 0 AND reserved >= 0 AND consumed >= 0),
    CONSTRAINT lot_allocation_positive CHECK (original_allocation > 0),
    CONSTRAINT lot_status_known CHECK (status IN ('active', 'exhausted')),
    CONSTRAINT lot_status_matches_amounts CHECK ((status = 'exhausted') = (balance = 0 AND reserved = 0))
);

-- Reservations: credits set aside for a job. A resolved reservation splits
-- its amount exactly into consumed and returned (I-10).
CREATE TABLE covenant.credit_reservations (
    account_id uuid NOT NULL
    CONSTRAINT credit_reservations_account_fkey REFERENCES covenant.accounts (account_id),
    reservation_id uuid NOT NULL,
    amount_micro covenant.micro_usd NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    expires_at timestamptz NOT NULL,
    consumed_micro covenant.micro_usd NOT NULL DEFAULT 0,
    released_micro covenant.micro_usd NOT NULL DEFAULT 0,
    mutation_id uuid NOT NULL
    CONSTRAINT credit_reservations_mutation_fkey REFERENCES covenant.ledger_mutations (mutation_id),
    resolved_by uuid
    CONSTRAINT credit_reservations_resolved_by_fkey REFERENCES covenant.ledger_mutations (mutation_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CONSTRAINT credit_reservations_pkey PRIMARY KEY (account_id, reservation_id),
    CONSTRAINT reservation_amount_positive CHECK (amount_micro > 0),
    CONSTRAINT reservation_status_known CHECK (status IN ('pending', 'finalized', 'released', 'expired')),
    CONSTRAINT reservation_conservation CHECK (
        (status = 'pending' AND consumed_micro = 0 AND released_micro = 0 AND resolved_by IS NULL)
        OR (
            status = 'finalized' AND consumed_micro + released_micro = amount_micro
            AND resolved_by IS NOT NULL
        )
        OR (
            status IN ('released', 'expired') AND consumed_micro = 0 AND released_micro = amount_micro
            AND resolved_by IS NOT NULL
        )
    )
);

-- finalize/release look a reservation up by id alone.
CREATE INDEX credit_reservations_id_idx ON covenant.credit_reservations (reservation_id);
-- the expiry sweep
CREATE INDEX credit_reservations_pending_expiry_idx ON covenant.credit_reservations (expires_at)
WHERE status = 'pending';

-- The lots a reservation draws on, in draw order (earliest expiry first).
CREATE TABLE covenant.reservation_lots (
    account_id uuid NOT NULL,
    reservation_id uuid NOT NULL,
    lot_id uuid NOT NULL,
    draw_no integer NOT NULL CONSTRAINT reservation_lots_draw_no_positive CHECK (draw_no >= 1),
    amount_micro covenant.micro_usd NOT NULL
    CONSTRAINT reservation_lots_amount_positive CHECK (amount_micro > 0),
    CONSTRAINT reservation_lots_pkey PRIMARY KEY (account_id, reservation_id, lot_id),
    CONSTRAINT reservation_lots_draw_unique UNIQUE (account_id, reservation_id, draw_no),
    CONSTRAINT reservation_lots_reservation_fkey FOREIGN KEY (account_id, reservation_id)
    REFERENCES covenant.credit_reservations (account_id, reservation_id),
    CONSTRAINT reservation_lots_lot_fkey FOREIGN KEY (account_id, lot_id)
    REFERENCES covenant.credit_lots (account_id, lot_id)
);

-- The journal: one line per movement of one lot, each with its mutation.
-- Append-only. The lots equal the sum of their lines (I-4).
CREATE TABLE covenant.credit_ledger (
    account_id uuid NOT NULL,
    mutation_id uuid NOT NULL
    CONSTRAINT credit_ledger_mutation_fkey REFERENCES covenant.ledger_mutations (mutation_id),
    line_no integer NOT NULL CONSTRAINT credit_ledger_line_no_positive CHECK (line_no >= 1),
    lot_id uuid NOT NULL,
    entry_type text NOT NULL
    CONSTRAINT credit_ledger_entry_type_fkey REFERENCES covenant.ledger_entry_types (entry_type),
    amount_micro covenant.micro_usd NOT NULL
    CONSTRAINT credit_ledger_amount_positive CHECK (amount_micro > 0),
    reservation_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_ledger_pkey PRIMARY KEY (account_id, mutation_id, line_no),
    CONSTRAINT credit_ledger_lot_fkey FOREIGN KEY (account_id, lot_id)
    REFERENCES covenant.credit_lots (account_id, lot_id),
    CONSTRAINT credit_ledger_reservation_fkey FOREIGN KEY (account_id, reservation_id)
    REFERENCES covenant.credit_reservations (account_id, reservation_id)
);

CREATE INDEX credit_ledger_mutation_idx ON covenant.credit_ledger (mutation_id);

-- Usage reports redeemed: one use per token (I-9). The jti is the
-- finalizing mutation's id.
CREATE TABLE covenant.usage_tokens (
    jti uuid CONSTRAINT usage_tokens_pkey PRIMARY KEY,
    account_id uuid NOT NULL,
    reservation_id uuid NOT NULL,
    actual_micro covenant.micro_usd NOT NULL,
    actor_id text NOT NULL,
    redeemed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_tokens_reservation_fkey FOREIGN KEY (account_id, reservation_id)
    REFERENCES covenant.credit_reservations (account_id, reservation_id)
);

-- Reputation: states in rank order with the thresholds that reach them.
CREATE TABLE covenant.reputation_states (
    state text PRIMARY KEY,
    rank integer NOT NULL CONSTRAINT reputation_states_rank_unique UNIQUE,
    min_score_bps covenant.basis_points NOT NULL,
    min_events integer NOT NULL CONSTRAINT reputation_states_min_events_nonnegative CHECK (min_events >= 0),
    description text NOT NULL
);

INSERT INTO covenant.reputation_states (state, rank, min_score_bps, min_events, description) VALUES
('cold', 0, 0, 0, 'new or unproven: the smallest surface'),
('warming', 1, 5000, 3, 'a few good observations'),
('established', 2, 7000, 10, 'a consistent record'),
('authoritative', 3, 8500, 25, 'a long, strong record');

CREATE TABLE covenant.reputation_event_types (
    event_type text PRIMARY KEY
    CONSTRAINT reputation_event_types_format CHECK (event_type ~ '^[a-z][a-z_]{0,31}$'),
    -- whether an event of this type carries an observation that moves the score
    scored boolean NOT NULL,
    description text NOT NULL
);

INSERT INTO covenant.reputation_event_types (event_type, scored, description) VALUES
('quality_signal', TRUE, 'a quality observation of an output'),
('task_completed', TRUE, 'a task finished, with its outcome'),
('credential_update', FALSE, 'credentials changed; recorded, the score does not move'),
('model_performance', TRUE, 'a model-performance measurement');

-- What record_reputation_event returns.
CREATE TYPE covenant.reputation_outcome AS (
    agent_id uuid,
    score_bps integer,
    state text,
    previous_state text,
    event_count bigint
);

CREATE TABLE covenant.agent_reputation (
    agent_id uuid PRIMARY KEY
    CONSTRAINT agent_reputation_agent_fkey REFERENCES covenant.accounts (account_id),
    score_bps covenant.basis_points NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'cold'
    CONSTRAINT agent_reputation_state_fkey REFERENCES covenant.reputation_states (state),
    event_count bigint NOT NULL DEFAULT 0
    CONSTRAINT agent_reputation_event_count_nonnegative CHECK (event_count >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per task type; the type 'unspecified' feeds only the aggregate above.
CREATE TABLE covenant.agent_task_reputation (
    agent_id uuid NOT NULL
    CONSTRAINT agent_task_reputation_agent_fkey REFERENCES covenant.agent_reputation (agent_id),
    task_type text NOT NULL
    CONSTRAINT agent_task_reputation_task_type_format CHECK (
        task_type ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$' AND task_type <> 'unspecified'
    ),
    score_bps covenant.basis_points NOT NULL,
    event_count bigint NOT NULL CONSTRAINT agent_task_reputation_event_count_positive CHECK (event_count >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_task_reputation_pkey PRIMARY KEY (agent_id, task_type)
);

-- The ledger's state machines (docs/state-machines.md).
INSERT INTO covenant.state_transitions (machine, from_state, to_state, description) VALUES
('reservation', 'pending', 'finalized', 'finalize_reservation (or a usage report) before the TTL'),
('reservation', 'pending', 'released', 'release_reservation before the TTL'),
('reservation', 'pending', 'expired', 'the expiry sweep after the TTL'),
('lot', 'active', 'exhausted', 'nothing left in balance or reserved: all of it consumed or moved out'),
('reputation', 'cold', 'warming', 'thresholds of warming met (one step up per event)'),
('reputation', 'warming', 'established', 'thresholds of established met (one step up per event)'),
('reputation', 'established', 'authoritative', 'thresholds of authoritative met (one step up per event)'),
('reputation', 'warming', 'cold', 'downgrade: score below warming'),
('reputation', 'established', 'warming', 'downgrade: score below established'),
('reputation', 'established', 'cold', 'downgrade: score below warming'),
('reputation', 'authoritative', 'established', 'downgrade: score below authoritative'),
('reputation', 'authoritative', 'warming', 'downgrade: score below established'),
('reputation', 'authoritative', 'cold', 'downgrade: score below warming'),
('request', 'received', 'validated', 'the request and its capability are allowed by the surface'),
('request', 'validated', 'reserved', 'credits reserved for it'),
('request', 'reserved', 'executing', 'the job started'),
('request', 'executing', 'finalized', 'the usage report finalized its reservation'),
('request', 'received', 'failed', 'malformed, or a capability the surface does not grant'),
('request', 'validated', 'failed', 'the reservation was refused'),
('request', 'reserved', 'failed', 'the job could not start; the reservation is released'),
('request', 'executing', 'failed', 'the job failed; the reservation is released or expires');

-- The invariant catalogue (docs/invariants.md). enforced_by lists how each
-- invariant is held: check / unique (the constraint names), procedure (the
-- error code a governed function raises), reconciliation (the failure code
-- covenant.reconcile() reports), liveness (with its fairness assumption).
CREATE TABLE covenant.invariants (
    invariant_id text PRIMARY KEY CONSTRAINT invariants_id_format CHECK (invariant_id ~ '^I-[0-9]+$'),
    name text NOT NULL CONSTRAINT invariants_name_unique UNIQUE,
    statement text NOT NULL,
    scope text NOT NULL CONSTRAINT invariants_scope_known CHECK (scope IN (
        'lot', 'reservation', 'account', 'mutation', 'usage_token', 'platform'
    )),
    kind text NOT NULL CONSTRAINT invariants_kind_known CHECK (kind IN ('safety', 'liveness')),
    enforced_by text[] NOT NULL CONSTRAINT invariants_enforced_by_known CHECK (
        enforced_by <@ ARRAY['check', 'unique', 'procedure', 'reconciliation']::text[]
        AND cardinality(enforced_by) >= 1
    ),
    constraint_names text[] NOT NULL DEFAULT '{}',
    error_code text CONSTRAINT invariants_error_code_fkey REFERENCES covenant.error_codes (code),
    failure_code text CONSTRAINT invariants_failure_code_format CHECK (failure_code ~ '^[A-Z][A-Z_]*$'),
    fairness text,
    CONSTRAINT invariants_liveness_fairness CHECK ((kind = 'liveness') = (fairness IS NOT NULL)),
    CONSTRAINT invariants_constraint_names CHECK (
        (('check' = any(enforced_by)) OR ('unique' = any(enforced_by))) = (cardinality(constraint_names) > 0)
    ),
    CONSTRAINT invariants_procedure_code CHECK (('procedure' = any(enforced_by)) = (error_code IS NOT NULL)),
    CONSTRAINT invariants_reconciliation_code
    CHECK (('reconciliation' = any(enforced_by)) = (failure_code IS NOT NULL))
);

INSERT INTO covenant.invariants (
    invariant_id, name, statement, scope, kind, enforced_by, constraint_names, error_code,
    failure_code, fairness
) VALUES
(
    'I-1', 'lot_conservation',
    'Every lot conserves: balance + reserved + consumed = original_allocation.',
    'lot', 'safety', '{check,reconciliation}', '{lot_conservation}', NULL,
    'LOT_CONSERVATION_BROKEN', NULL
),
(
    'I-2', 'non_negativity',
    'No amount is ever negative: lot balance, reserved and consumed, reservation and journal amounts.',
    'lot', 'safety', '{check,reconciliation}', '{lot_nonnegative,micro_usd_nonnegative}', NULL,
    'NEGATIVE_AMOUNT', NULL
),
(
    'I-3', 'receivable_bound',
    'An account''s credits held by pending reservations never exceed its receivable bound.',
    'account', 'safety', '{procedure}', '{}', 'CV012', NULL, NULL
),
(
    'I-4', 'platform_conservation',
    'Credits are neither created nor lost: every lot equals the sum of its journal lines, every '
    || 'transfer or distribution moves in exactly what it moves out, and minted = held + spent.',
    'platform', 'safety', '{reconciliation}', '{}', NULL, 'PLATFORM_CONSERVATION_DRIFT', NULL
),
(
    'I-5', 'finalize_within_reservation',
    'A reservation is finalized for at most the amount it reserved.',
    'reservation', 'safety', '{procedure}', '{}', 'CV011', NULL, NULL
),
(
    'I-6', 'mutation_applied_once',
    'A mutation id is applied at most once; each of its journal lines exists once.',
    'mutation', 'safety', '{unique,procedure}', '{ledger_mutations_pkey,credit_ledger_pkey}', 'CV002',
    NULL, NULL
),
(
    'I-7', 'reservation_resolved_once',
    'A reservation resolves (finalized, released or expired) at most once.',
    'reservation', 'safety', '{procedure}', '{}', 'CV013', NULL, NULL
),
(
    'I-8', 'bps_sum',
    'The shares of a revenue distribution sum to exactly 10000 basis points, and the parts to the whole.',
    'mutation', 'safety', '{procedure}', '{}', 'CV016', NULL, NULL
),
(
    'I-9', 'usage_token_once',
    'A usage report (jti) is redeemed at most once.',
    'usage_token', 'safety', '{unique,procedure}', '{usage_tokens_pkey}', 'CV020', NULL, NULL
),
(
    'I-10', 'reservation_conservation',
    'A resolved reservation splits its amount exactly into consumed and returned; a pending one has '
    || 'neither.',
    'reservation', 'safety', '{check,reconciliation}', '{reservation_conservation}', NULL,
    'RESERVATION_CONSERVATION_BROKEN', NULL
),
(
    'I-11', 'no_use_after_ttl',
    'A pending reservation is resolved eventually, and never finalized or released after its TTL: '
    || 'only the expiry sweep resolves it then.',
    'reservation', 'liveness', '{procedure}', '{}', 'CV015', NULL,
    'Every job either reports (finalize or release) or stops; the expiry sweep runs infinitely often.'
),
(
    'I-12', 'expiry_within_one_sweep',
    'A pending reservation is expired by the first sweep after its TTL.',
    'reservation', 'liveness', '{reconciliation}', '{}', NULL, 'RESERVATION_SWEEP_OVERDUE',
    'expire_reservations runs at least once per sweep interval (pg_cron: every minute), each run '
    || 'resolving up to p_limit reservations, and at most p_limit reservations fall due per interval.'
),
(
    'I-13', 'treasury_adequacy',
    'Treasury accounts hold at least the unspent credits of every grant lot outside the treasury.',
    'platform', 'safety', '{reconciliation}', '{}', NULL, 'TREASURY_INADEQUATE', NULL
),
(
    'I-14', 'one_audit_entry_per_mutation',
    'Every governed mutation has exactly one audit entry (entry_id = mutation_id, domain '
    || 'account:<account_id>), in the same transaction; a quarantined domain refuses mutations.',
    'mutation', 'safety', '{procedure,reconciliation}', '{}', 'CV001', 'AUDIT_COVERAGE_GAP', NULL
);

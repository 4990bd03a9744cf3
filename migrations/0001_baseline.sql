-- 0001 baseline: default privileges and the error-code catalogue.
-- Runs as covenant_migrator with search_path = pg_catalog, pg_temp, so every
-- covenant name is schema-qualified.

-- New functions are executable by PUBLIC unless the owner's default
-- privileges say otherwise. Revoke it once, for every schema, so that a
-- function added by any later migration or repeatable starts private and is
-- granted explicitly in sql/policies.
ALTER DEFAULT PRIVILEGES FOR ROLE covenant_migrator
REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

ALTER DEFAULT PRIVILEGES FOR ROLE covenant_migrator
REVOKE USAGE ON TYPES FROM PUBLIC;

-- The SQLSTATE catalogue of docs/errors.md. Governed functions raise through
-- covenant._raise(name, ...) so that a code is looked up here, never typed by
-- hand; python/covenant/errors.py mirrors it and a test proves them equal.
CREATE TABLE covenant.error_codes (
    code text PRIMARY KEY CONSTRAINT error_codes_code_format CHECK (code ~ '^CV[0-9]{3}$'),
    name text NOT NULL CONSTRAINT error_codes_name_unique UNIQUE
    CONSTRAINT error_codes_name_format CHECK (name ~ '^[A-Z][A-Z0-9_]*$'),
    meaning text NOT NULL CONSTRAINT error_codes_meaning_present CHECK (meaning <> ''),
    retryable boolean NOT NULL,
    http_status integer NOT NULL
    CONSTRAINT error_codes_http_status_range CHECK (http_status BETWEEN 400 AND 599)
);

INSERT INTO covenant.error_codes (code, name, meaning, retryable, http_status) VALUES
(
    'CV001', 'AUDIT_QUARANTINE',
    'The audit domain is quarantined; appends and governed mutations of it are refused.',
    FALSE, 503
),
(
    'CV002', 'IDEMPOTENCY_CONFLICT',
    'The idempotency key (entry_id or mutation_id) was already used for a different request.',
    FALSE, 409
),
(
    'CV003', 'EVENT_TIME_SKEW',
    'event_time is more than 5 minutes away from the server clock.',
    FALSE, 422
),
(
    'CV004', 'INVALID_ARGUMENT',
    'An argument is malformed: tag, actor, type, amount, interval or payload.',
    FALSE, 400
),
(
    'CV005', 'NOT_AUTHORIZED',
    'The actor is not allowed to perform this mutation by the mutation policy table.',
    FALSE, 403
),
(
    'CV010', 'INSUFFICIENT_BALANCE',
    'The account''s unexpired available balance is smaller than the amount requested.',
    FALSE, 402
),
(
    'CV011', 'BUDGET_OVERSPEND',
    'The actual amount to finalize exceeds the amount reserved.',
    FALSE, 409
),
(
    'CV012', 'RECEIVABLE_BOUND_EXCEEDED',
    'The movement would take a receivable beyond its bound.',
    FALSE, 409
),
(
    'CV013', 'INVALID_TRANSITION',
    'The state machine does not allow this transition (for example, resolving a reservation twice).',
    FALSE, 409
),
(
    'CV014', 'RESERVATION_UNKNOWN',
    'No reservation has this id.',
    FALSE, 404
),
(
    'CV015', 'RESERVATION_EXPIRED',
    'The reservation''s TTL has passed; it can only be expired.',
    FALSE, 410
),
(
    'CV016', 'BPS_SUM_INVALID',
    'Revenue shares in basis points do not sum to exactly 10000.',
    FALSE, 422
),
(
    'CV017', 'ACCOUNT_UNKNOWN',
    'No account has this id.',
    FALSE, 404
);

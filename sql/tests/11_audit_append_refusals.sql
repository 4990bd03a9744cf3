-- The append API refuses bad calls by SQLSTATE and writes nothing (SPEC §3.3,
-- §6): INVALID_ARGUMENT (CV004), EVENT_TIME_SKEW (CV003),
-- IDEMPOTENCY_CONFLICT (CV002), AUDIT_QUARANTINE (CV001); a repeated entry
-- with the same content is the same entry (duplicate = true, no new row).
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(48);

SET LOCAL ROLE covenant_app;
SELECT results_eq(
    $$SELECT seq, duplicate FROM covenant.append_audit_entry(
        'tests.refusals', '11000000-0000-4000-8000-000000000001', 'refusals.first',
        'service:tests', '{"n": 1}')$$,
    $$VALUES (1::bigint, FALSE)$$,
    'the first entry is appended'
);
RESET ROLE;

-- What is written before the refusals (the superuser counts every domain).
CREATE TEMP TABLE written_before AS
SELECT
    (SELECT count(*) FROM covenant.audit_trail) AS entries,
    (SELECT count(*) FROM covenant.audit_trail_chain_links) AS links,
    (SELECT array_agg(h ORDER BY h.domain_tag) FROM covenant.audit_trail_head AS h) AS heads;

SET LOCAL ROLE covenant_app;

-- INVALID_ARGUMENT: the domain tag.
SELECT
    throws_ok(
        pg_catalog.format(
            $$SELECT * FROM covenant.append_audit_entry(%s, gen_random_uuid(), 'refusals.x',
            'service:tests', '{}')$$,
            coalesce(pg_catalog.quote_literal(v.tag), 'NULL')
        ),
        'CV004', NULL, 'a malformed domain tag is refused (INVALID_ARGUMENT): ' || v.what
    )
FROM (
    VALUES
    ('Tests.Refusals', 'upper case'),
    ('', 'empty'),
    (NULL, 'NULL'),
    (E'tests\nrefusals', 'a newline'),
    ('-tests', 'a leading dash'),
    ('tests refusals', 'a space'),
    (repeat('a', 129), '129 characters')
) AS v (tag, what);

-- INVALID_ARGUMENT: the event type.
SELECT
    throws_ok(
        pg_catalog.format(
            $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), %s,
            'service:tests', '{}')$$,
            coalesce(pg_catalog.quote_literal(v.event_type), 'NULL')
        ),
        'CV004', NULL, 'a malformed event type is refused (INVALID_ARGUMENT): ' || v.what
    )
FROM (
    VALUES
    ('Refusals.X', 'upper case'),
    ('', 'empty'),
    (NULL, 'NULL'),
    (E'refusals\nx', 'a newline')
) AS v (event_type, what);

-- INVALID_ARGUMENT: the actor.
SELECT
    throws_ok(
        pg_catalog.format(
            $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(),
            'refusals.x', %s, '{}')$$,
            coalesce(pg_catalog.quote_literal(v.actor), 'NULL')
        ),
        'CV004', NULL, 'a malformed actor is refused (INVALID_ARGUMENT): ' || v.what
    )
FROM (
    VALUES
    ('alice', 'a bare name'),
    ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'an upper-case UUID'),
    ('service:', 'service: without a name'),
    ('service:Tests', 'an upper-case service name'),
    ('', 'empty'),
    (NULL, 'NULL'),
    (E'service:tests\n', 'a trailing newline')
) AS v (actor, what);

-- INVALID_ARGUMENT: the entry id, payload and event time.
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', NULL, 'refusals.x',
        'service:tests', '{}')$$,
    'CV004', NULL, 'a NULL entry_id is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), 'refusals.x',
        'service:tests', NULL)$$,
    'CV004', NULL, 'a NULL payload is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), 'refusals.x',
        'service:tests', '{}', NULL)$$,
    'CV004', NULL, 'a NULL event_time is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), 'refusals.x',
        'service:tests', '{}', 'infinity')$$,
    'CV004', NULL, 'an infinite event_time is refused (INVALID_ARGUMENT)'
);

-- INVALID_ARGUMENT: batches.
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '{}')$$,
    'CV004', NULL, 'a batch that is not a JSON array is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '[]')$$,
    'CV004', NULL, 'an empty batch is refused (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '[
        {"entry_id": "11000000-0000-4000-8000-000000000002", "event_type": "refusals.ok",
         "actor_id": "service:tests", "payload": {}},
        {"entry_id": "11000000-0000-4000-8000-000000000003", "event_type": "refusals.bad",
         "actor_id": "Alice", "payload": {}}
    ]')$$,
    'CV004', NULL, 'a batch with one malformed entry is refused whole (INVALID_ARGUMENT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '[
        {"entry_id": "not-a-uuid", "event_type": "refusals.bad", "actor_id": "service:tests",
         "payload": {}}
    ]')$$,
    'CV004', NULL, 'a batch entry whose entry_id is not a UUID is refused (INVALID_ARGUMENT)'
);

-- EVENT_TIME_SKEW: more than 5 minutes from the server clock.
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), 'refusals.x',
        'service:tests', '{}', now() + interval '1 hour')$$,
    'CV003', NULL, 'an event_time 1 hour ahead is refused (EVENT_TIME_SKEW)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals', gen_random_uuid(), 'refusals.x',
        'service:tests', '{}', now() - interval '1 hour')$$,
    'CV003', NULL, 'an event_time 1 hour behind is refused (EVENT_TIME_SKEW)'
);
SELECT throws_ok(
    pg_catalog.format(
        $$SELECT * FROM covenant.append_audit_entries('tests.refusals', %L)$$,
        pg_catalog.jsonb_build_array(
            pg_catalog.jsonb_build_object(
                'entry_id', '11000000-0000-4000-8000-000000000004', 'event_type', 'refusals.ok',
                'actor_id', 'service:tests', 'payload', '{}'::jsonb
            ),
            pg_catalog.jsonb_build_object(
                'entry_id', '11000000-0000-4000-8000-000000000005', 'event_type', 'refusals.late',
                'actor_id', 'service:tests', 'payload', '{}'::jsonb,
                'event_time', now() - interval '1 hour'
            )
        )
    ),
    'CV003', NULL, 'a batch with one skewed entry is refused whole (EVENT_TIME_SKEW)'
);

-- IDEMPOTENCY_CONFLICT: an entry_id already used for something else.
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals',
        '11000000-0000-4000-8000-000000000001', 'refusals.first', 'service:tests', '{"n": 2}')$$,
    'CV002', NULL, 'the same entry_id with another payload is refused (IDEMPOTENCY_CONFLICT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals',
        '11000000-0000-4000-8000-000000000001', 'refusals.other', 'service:tests', '{"n": 1}')$$,
    'CV002', NULL, 'the same entry_id with another event type is refused (IDEMPOTENCY_CONFLICT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals',
        '11000000-0000-4000-8000-000000000001', 'refusals.first', 'service:other', '{"n": 1}')$$,
    'CV002', NULL, 'the same entry_id with another actor is refused (IDEMPOTENCY_CONFLICT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals.elsewhere',
        '11000000-0000-4000-8000-000000000001', 'refusals.first', 'service:tests', '{"n": 1}')$$,
    'CV002', NULL, 'the same entry_id on another domain is refused (IDEMPOTENCY_CONFLICT)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '[
        {"entry_id": "11000000-0000-4000-8000-000000000006", "event_type": "refusals.ok",
         "actor_id": "service:tests", "payload": {}},
        {"entry_id": "11000000-0000-4000-8000-000000000001", "event_type": "refusals.first",
         "actor_id": "service:tests", "payload": {"n": 3}}
    ]')$$,
    'CV002', NULL, 'a batch reusing an entry_id for other content is refused whole (IDEMPOTENCY_CONFLICT)'
);

-- The same entry again: its receipt, marked duplicate, and no new row.
SELECT results_eq(
    $$SELECT entry_id, seq, previous_hash, entry_hash, created_at, duplicate
      FROM covenant.append_audit_entry('tests.refusals', '11000000-0000-4000-8000-000000000001',
          'refusals.first', 'service:tests', '{"n": 1}')$$,
    $$SELECT entry_id, seq, previous_hash, entry_hash, created_at, TRUE
      FROM covenant.audit_trail_chain_links WHERE entry_id = '11000000-0000-4000-8000-000000000001'$$,
    'the same entry_id with the same content returns the original receipt with duplicate = true'
);
SELECT results_eq(
    $$SELECT seq, duplicate FROM covenant.append_audit_entries('tests.refusals', '[
        {"entry_id": "11000000-0000-4000-8000-000000000001", "event_type": "refusals.first",
         "actor_id": "service:tests", "payload": {"n": 1}}
    ]')$$,
    $$VALUES (1::bigint, TRUE)$$,
    'the same entry in a batch is a duplicate too'
);
RESET ROLE;

SELECT results_eq(
    $$SELECT
        (SELECT count(*) FROM covenant.audit_trail),
        (SELECT count(*) FROM covenant.audit_trail_chain_links),
        (SELECT array_agg(h ORDER BY h.domain_tag) FROM covenant.audit_trail_head AS h)$$,
    'SELECT entries, links, heads FROM written_before',
    'nothing was written by any refused call or duplicate: entries, chain links and heads unchanged'
);

-- AUDIT_QUARANTINE: an open (or half-open) breaker refuses appends.
SET LOCAL ROLE covenant_migrator;
INSERT INTO covenant.audit_quarantine (domain_tag, state, opened_at, reason)
VALUES ('tests.refusals', 'open', clock_timestamp(), 'pgTAP: opened by hand');
RESET ROLE;
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals',
        '11000000-0000-4000-8000-000000000007', 'refusals.x', 'service:tests', '{}')$$,
    'CV001', NULL, 'an append to an open (quarantined) domain is refused (AUDIT_QUARANTINE)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.refusals', '[
        {"entry_id": "11000000-0000-4000-8000-000000000007", "event_type": "refusals.x",
         "actor_id": "service:tests", "payload": {}}
    ]')$$,
    'CV001', NULL, 'a batch to an open (quarantined) domain is refused (AUDIT_QUARANTINE)'
);
RESET ROLE;
SET LOCAL ROLE covenant_migrator;
UPDATE covenant.audit_quarantine SET state = 'half_open'
WHERE domain_tag = 'tests.refusals';
RESET ROLE;
SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.refusals',
        '11000000-0000-4000-8000-000000000007', 'refusals.x', 'service:tests', '{}')$$,
    'CV001', NULL, 'an append to a half-open domain is refused (AUDIT_QUARANTINE)'
);
SELECT
    is(
        r.seq, 1::bigint, 'the quarantine is per domain: another domain still appends'
    )
FROM covenant.append_audit_entry(
    'tests.refusals.other', '11000000-0000-4000-8000-000000000008', 'refusals.other',
    'service:tests', '{}'
) AS r;
RESET ROLE;
SELECT is(
    (
        SELECT count(*) FROM covenant.audit_trail
        WHERE domain_tag = 'tests.refusals'
    ),
    1::bigint,
    'the quarantined domain still holds its one entry'
);

-- Closing by hand is refused without two approvals (the transition trigger).
SET LOCAL ROLE covenant_migrator;
SELECT throws_ok(
    $$UPDATE covenant.audit_quarantine SET state = 'closed' WHERE domain_tag = 'tests.refusals'$$,
    'CV013', NULL, 'even the owner cannot close a breaker by hand without two approvals'
);
SELECT throws_ok(
    $$UPDATE covenant.audit_quarantine
      SET reset_approvals = '{service:op-a,service:op-b}', reset_logins = '{login-a,login-b}'
      WHERE domain_tag = 'tests.refusals'$$,
    'CV005', NULL, 'approvals cannot be forged: each adds one operator, as the login giving it'
);
SELECT throws_ok(
    $$UPDATE covenant.audit_quarantine SET domain_tag = 'tests.renamed'
      WHERE domain_tag = 'tests.refusals'$$,
    'CV013', NULL, 'a quarantined domain cannot escape by renaming its record'
);
RESET ROLE;
SET LOCAL ROLE covenant_app;
-- Counterexample: a domain whose breaker is closed accepts the append.
SELECT results_eq(
    $$SELECT seq, duplicate FROM covenant.append_audit_entry('tests.refusals.other',
        '11000000-0000-4000-8000-000000000007', 'refusals.x', 'service:tests', '{}')$$,
    $$VALUES (2::bigint, FALSE)$$,
    'with the breaker closed the append is accepted'
);
SELECT results_eq(
    $$SELECT seq, duplicate FROM covenant.append_audit_entry('tests.refusals.other',
        '11000000-0000-4000-8000-000000000009', 'refusals.x', 'service:tests', '{}',
        now() - interval '4 minutes')$$,
    $$VALUES (3::bigint, FALSE)$$,
    'an event_time 4 minutes behind is within the skew bound and accepted'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

-- A superuser can still edit the record (triggers off, edit, triggers back
-- on); verification is what catches it (SPEC §2, §3.5): verify_audit_chain
-- returns ok = false with the first bad seq, the domain's quarantine opens,
-- the transition is itself recorded, and the next append fails with
-- AUDIT_QUARANTINE (CV001). Other domains are not affected.
BEGIN;
-- The suite's own DDL passes the DDL guard (16_ddl_guard.sql tests the guard).
DO $mark$ BEGIN PERFORM set_config('covenant.ddl', 'pgtap', TRUE); END $mark$;
SELECT plan(23);

-- Three domains of three entries each, and one of one entry.
SET LOCAL ROLE covenant_app;
SELECT set_eq(
    pg_catalog.format(
        $$SELECT domain_tag, count(*)::integer FROM (
            SELECT r.domain_tag FROM covenant.append_audit_entries('tests.verify', %1$s) AS r
            UNION ALL
            SELECT r.domain_tag FROM covenant.append_audit_entries('tests.verify.deleted', %1$s) AS r
            UNION ALL
            SELECT r.domain_tag FROM covenant.append_audit_entries('tests.verify.relinked', %1$s) AS r
            UNION ALL
            SELECT r.domain_tag FROM covenant.append_audit_entry('tests.verify.other',
                gen_random_uuid(), 'verify.other', 'service:tests', '{}') AS r
        ) AS a GROUP BY domain_tag$$,
        -- the same three entries in each domain, with fresh entry ids
        pg_catalog.format(
            $$(SELECT jsonb_agg(e || jsonb_build_object('entry_id', gen_random_uuid()) ORDER BY o)
               FROM jsonb_array_elements(%L) WITH ORDINALITY AS x (e, o))$$,
            '[{"event_type": "verify.credit", "actor_id": "service:tests", "payload": {"amount": 10}},
              {"event_type": "verify.debit", "actor_id": "service:tests", "payload": {"amount": 3}},
              {"event_type": "verify.debit", "actor_id": "service:tests", "payload": {"amount": 4}}]'
        )
    ),
    $$VALUES ('tests.verify', 3), ('tests.verify.deleted', 3), ('tests.verify.relinked', 3),
             ('tests.verify.other', 1)$$,
    'entries appended'
);
SELECT results_eq(
    $$SELECT * FROM covenant.verify_audit_chain('tests.verify')$$,
    $$VALUES (TRUE, 3::bigint, NULL::bigint, NULL::text)$$,
    'the untouched chain verifies'
);
RESET ROLE;

-- The superuser's tamper: disable the append-only trigger, edit the amount of
-- seq 2, and put the trigger back as it was (ENABLE ALWAYS).
ALTER TABLE covenant.audit_trail DISABLE TRIGGER audit_trail_append_only;
UPDATE covenant.audit_trail SET payload = '{"amount": 3000}'
WHERE domain_tag = 'tests.verify' AND seq = 2;
ALTER TABLE covenant.audit_trail ENABLE ALWAYS TRIGGER audit_trail_append_only;

SELECT is(
    (
        SELECT payload FROM covenant.audit_trail
        WHERE domain_tag = 'tests.verify' AND seq = 2
    ),
    '{"amount": 3000}'::jsonb,
    'the superuser''s edit went through (a superuser bypasses everything)'
);
SELECT is_empty(
    $$SELECT tgrelid::regclass FROM pg_catalog.pg_trigger
      WHERE tgname = 'audit_trail_append_only' AND tgenabled <> 'A'$$,
    'and left no trace in the catalog: every append-only trigger is ENABLE ALWAYS again'
);

SET LOCAL ROLE covenant_app;
SELECT results_eq(
    $$SELECT ok, first_bad_seq, reason FROM covenant.verify_audit_chain('tests.verify')$$,
    $$VALUES (FALSE, 2::bigint, 'hash mismatch: the entry was edited'::text)$$,
    'verify_audit_chain catches the edit: ok = false at seq 2'
);
SELECT results_eq(
    $$SELECT state, first_bad_seq FROM covenant.audit_quarantine WHERE domain_tag = 'tests.verify'$$,
    $$VALUES ('open'::text, 2::bigint)$$,
    'the failed verification opened the domain''s quarantine'
);
SELECT results_eq(
    $$SELECT quarantine_state, first_bad_seq FROM covenant.audit_domains
      WHERE domain_tag = 'tests.verify'$$,
    $$VALUES ('open'::text, 2::bigint)$$,
    'covenant.audit_domains shows the domain quarantined'
);
SELECT results_eq(
    $$SELECT event_type, actor_id, payload ->> 'from', payload ->> 'to', payload ->> 'first_bad_seq'
      FROM covenant.audit_trail
      WHERE domain_tag = 'system:quarantine' AND payload ->> 'domain_tag' = 'tests.verify'$$,
    $$VALUES ('quarantine.open', 'service:covenant-verifier', 'closed', 'open', '2')$$,
    'the transition is itself recorded on the chain of system:quarantine'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.verify',
        '15000000-0000-4000-8000-000000000001', 'verify.debit', 'service:tests', '{"amount": 1}')$$,
    'CV001', NULL, 'the next append to the quarantined domain is refused (AUDIT_QUARANTINE)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.verify', '[
        {"entry_id": "15000000-0000-4000-8000-000000000002", "event_type": "verify.debit",
         "actor_id": "service:tests", "payload": {"amount": 1}}
    ]')$$,
    'CV001', NULL, 'and so is a batch (AUDIT_QUARANTINE)'
);
SELECT results_eq(
    $$SELECT ok, first_bad_seq FROM covenant.verify_audit_chain('tests.verify')$$,
    $$VALUES (FALSE, 2::bigint)$$,
    'verifying again still fails'
);
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail
        WHERE domain_tag = 'system:quarantine' AND payload ->> 'domain_tag' = 'tests.verify'
    ),
    1,
    'an already open quarantine is not opened (nor recorded) twice'
);
SELECT
    is(
        r.seq, 2::bigint, 'another domain still appends'
    )
FROM covenant.append_audit_entry(
    'tests.verify.other', '15000000-0000-4000-8000-000000000003', 'verify.other', 'service:tests', '{}'
) AS r;
SELECT results_eq(
    $$SELECT ok, checked FROM covenant.verify_audit_chain('tests.verify.other')$$,
    $$VALUES (TRUE, 2::bigint)$$,
    'and verifies'
);
SELECT results_eq(
    $$SELECT ok, first_bad_seq FROM covenant.verify_audit_chain('system:quarantine')$$,
    $$VALUES (TRUE, NULL::bigint)$$,
    'the record of quarantine transitions verifies'
);
RESET ROLE;

-- The superuser deletes an entry.
ALTER TABLE covenant.audit_trail DISABLE TRIGGER audit_trail_append_only;
DELETE FROM covenant.audit_trail
WHERE domain_tag = 'tests.verify.deleted' AND seq = 2;
ALTER TABLE covenant.audit_trail ENABLE ALWAYS TRIGGER audit_trail_append_only;

-- The superuser rewrites seq 2 and recomputes its hash in the entry and in its
-- chain link, consistently: the link of seq 3 still names the old hash.
ALTER TABLE covenant.audit_trail DISABLE TRIGGER audit_trail_append_only;
ALTER TABLE covenant.audit_trail_chain_links DISABLE TRIGGER audit_chain_links_append_only;
UPDATE covenant.audit_trail SET
    payload = '{"amount": 3000}',
    entry_hash = covenant.audit_entry_hash_v1(
        domain_tag, seq, entry_id, event_type, actor_id, event_time, previous_hash,
        '{"amount": 3000}'
    )
WHERE domain_tag = 'tests.verify.relinked' AND seq = 2;
UPDATE covenant.audit_trail_chain_links AS l SET entry_hash = t.entry_hash
FROM covenant.audit_trail AS t
WHERE
    l.domain_tag = 'tests.verify.relinked' AND l.seq = 2
    AND t.domain_tag = l.domain_tag AND t.seq = l.seq;
ALTER TABLE covenant.audit_trail ENABLE ALWAYS TRIGGER audit_trail_append_only;
ALTER TABLE covenant.audit_trail_chain_links ENABLE ALWAYS TRIGGER audit_chain_links_append_only;

SET LOCAL ROLE covenant_app;
SELECT results_eq(
    $$SELECT ok, first_bad_seq, reason FROM covenant.verify_audit_chain('tests.verify.deleted')$$,
    $$VALUES (FALSE, 2::bigint,
              'entry missing (deleted, or its partition detached outside retention)'::text)$$,
    'a deleted entry is caught at its seq'
);
SELECT results_eq(
    $$SELECT ok, first_bad_seq, reason FROM covenant.verify_audit_chain('tests.verify.relinked')$$,
    $$VALUES (FALSE, 3::bigint,
              'link does not follow the previous entry (reordered or rewritten)'::text)$$,
    'an entry rewritten with a consistent hash and link is caught at the next seq'
);
SELECT results_eq(
    $$SELECT domain_tag, state FROM covenant.audit_quarantine
      WHERE domain_tag IN ('tests.verify.deleted', 'tests.verify.relinked') ORDER BY domain_tag$$,
    $$VALUES ('tests.verify.deleted', 'open'), ('tests.verify.relinked', 'open')$$,
    'both domains are quarantined'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.verify.relinked',
        '15000000-0000-4000-8000-000000000004', 'verify.debit', 'service:tests', '{"amount": 1}')$$,
    'CV001', NULL, 'the rewritten domain refuses appends (AUDIT_QUARANTINE)'
);

-- Three consecutive failures to verify (timeouts, errors) open it too.
SELECT results_eq(
    $$SELECT state, consecutive_failures FROM covenant.record_audit_verification_failure(
        'tests.verify.other', 'service:tests', 'statement timeout')$$,
    $$VALUES ('closed'::text, 1)$$,
    'a first failure to verify is counted'
);
SELECT results_eq(
    $$SELECT state, consecutive_failures FROM covenant.record_audit_verification_failure(
        'tests.verify.other', 'service:tests', 'statement timeout')$$,
    $$VALUES ('closed'::text, 2)$$,
    'a second one is counted'
);
SELECT results_eq(
    $$SELECT state, consecutive_failures FROM covenant.record_audit_verification_failure(
        'tests.verify.other', 'service:tests', 'statement timeout')$$,
    $$VALUES ('open'::text, 3)$$,
    'the third in a row opens the quarantine'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.verify.other',
        '15000000-0000-4000-8000-000000000005', 'verify.other', 'service:tests', '{}')$$,
    'CV001', NULL, 'and the domain refuses appends (AUDIT_QUARANTINE)'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

-- Appends and governed audit actions run in READ COMMITTED only (SPEC §3.3):
-- under REPEATABLE READ the snapshot predates the domain lock, so the head
-- read would be stale; such callers are refused up front with
-- ISOLATION_LEVEL_UNSUPPORTED (CV018), and nothing is written. The isolation
-- level is set for this file's whole transaction, before its first query.
BEGIN;
-- = SET TRANSACTION ISOLATION LEVEL REPEATABLE READ (a form sqlfluff cannot parse)
SET LOCAL transaction_isolation = 'repeatable read';
SELECT plan(12);

SELECT is(
    current_setting('transaction_isolation'), 'repeatable read',
    'this file runs in a REPEATABLE READ transaction'
);

SET LOCAL ROLE covenant_app;
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.isolation',
        '12000000-0000-4000-8000-000000000001', 'isolation.x', 'service:tests', '{}')$$,
    'CV018', NULL, 'covenant_app: append_audit_entry is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entries('tests.isolation', '[
        {"entry_id": "12000000-0000-4000-8000-000000000002", "event_type": "isolation.x",
         "actor_id": "service:tests", "payload": {}}
    ]')$$,
    'CV018', NULL, 'covenant_app: append_audit_entries is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.verify_audit_chain('tests.isolation')$$,
    'CV018', NULL, 'covenant_app: verify_audit_chain is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.create_audit_checkpoint('tests.isolation', 'service:tests')$$,
    'CV018', NULL, 'covenant_app: create_audit_checkpoint is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.record_audit_verification_failure('tests.isolation', 'service:tests',
        'timeout')$$,
    'CV018', NULL,
    'covenant_app: record_audit_verification_failure is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
RESET ROLE;

SET LOCAL ROLE covenant_dba;
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_probe('tests.isolation', 'service:ops')$$,
    'CV018', NULL, 'covenant_dba: approve_audit_probe is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.approve_audit_reset('tests.isolation', 'service:ops')$$,
    'CV018', NULL, 'covenant_dba: approve_audit_reset is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
SELECT throws_ok(
    $$SELECT * FROM covenant.detach_audit_partition('audit_trail_p200001', 'service:ops')$$,
    'CV018', NULL, 'covenant_dba: detach_audit_partition is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);
RESET ROLE;

-- Not even the superuser.
SELECT throws_ok(
    $$SELECT * FROM covenant.append_audit_entry('tests.isolation',
        '12000000-0000-4000-8000-000000000003', 'isolation.x', 'service:tests', '{}')$$,
    'CV018', NULL, 'superuser: append_audit_entry is refused (ISOLATION_LEVEL_UNSUPPORTED)'
);

SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail_chain_links
        WHERE domain_tag = 'tests.isolation'
    ),
    0,
    'nothing was appended'
);
SELECT is(
    (
        SELECT count(*)::integer FROM covenant.audit_trail_head
        WHERE domain_tag = 'tests.isolation'
    ),
    0,
    'no head was created'
);

SELECT * FROM finish();
ROLLBACK;

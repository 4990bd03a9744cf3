-- Row-level security and grants of the audit trail (docs/security.md).
--
-- RLS is enabled and FORCED on every audit table (migration 0002), so it
-- binds their owner, covenant_migrator, too. The append functions are
-- SECURITY DEFINER and run as covenant_migrator: the INSERT policies name
-- that role, or the definer would see and insert nothing (the FORCE +
-- definer-owner trap). There is no UPDATE or DELETE policy for anyone, except
-- UPDATE of the head and of the quarantine state by their owner.

DROP POLICY IF EXISTS audit_trail_insert ON covenant.audit_trail;
CREATE POLICY audit_trail_insert ON covenant.audit_trail
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_trail_select ON covenant.audit_trail;
CREATE POLICY audit_trail_select ON covenant.audit_trail
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

DROP POLICY IF EXISTS audit_chain_links_insert ON covenant.audit_trail_chain_links;
CREATE POLICY audit_chain_links_insert ON covenant.audit_trail_chain_links
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_chain_links_select ON covenant.audit_trail_chain_links;
CREATE POLICY audit_chain_links_select ON covenant.audit_trail_chain_links
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

DROP POLICY IF EXISTS audit_checkpoints_insert ON covenant.audit_trail_checkpoints;
CREATE POLICY audit_checkpoints_insert ON covenant.audit_trail_checkpoints
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_checkpoints_select ON covenant.audit_trail_checkpoints;
CREATE POLICY audit_checkpoints_select ON covenant.audit_trail_checkpoints
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

DROP POLICY IF EXISTS audit_retention_insert ON covenant.audit_trail_retention;
CREATE POLICY audit_retention_insert ON covenant.audit_trail_retention
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_retention_select ON covenant.audit_trail_retention;
CREATE POLICY audit_retention_select ON covenant.audit_trail_retention
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

DROP POLICY IF EXISTS audit_head_insert ON covenant.audit_trail_head;
CREATE POLICY audit_head_insert ON covenant.audit_trail_head
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_head_update ON covenant.audit_trail_head;
CREATE POLICY audit_head_update ON covenant.audit_trail_head
FOR UPDATE TO covenant_migrator USING (TRUE) WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_head_select ON covenant.audit_trail_head;
CREATE POLICY audit_head_select ON covenant.audit_trail_head
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

-- The breaker state: written by its owner's functions only, never deleted
-- (a trigger refuses DELETE and TRUNCATE).
DROP POLICY IF EXISTS audit_quarantine_insert ON covenant.audit_quarantine;
CREATE POLICY audit_quarantine_insert ON covenant.audit_quarantine
FOR INSERT TO covenant_migrator WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_quarantine_update ON covenant.audit_quarantine;
CREATE POLICY audit_quarantine_update ON covenant.audit_quarantine
FOR UPDATE TO covenant_migrator USING (TRUE) WITH CHECK (TRUE);
DROP POLICY IF EXISTS audit_quarantine_select ON covenant.audit_quarantine;
CREATE POLICY audit_quarantine_select ON covenant.audit_quarantine
FOR SELECT TO covenant_app, covenant_dba, covenant_migrator USING (TRUE);

-- Tables: reads for the runtime and break-glass roles, no writes.
GRANT SELECT ON
covenant.audit_trail,
covenant.audit_trail_chain_links,
covenant.audit_trail_head,
covenant.audit_trail_checkpoints,
covenant.audit_trail_retention,
covenant.audit_quarantine,
covenant.state_transitions,
covenant.audit_domains
TO covenant_app, covenant_dba;

-- The public API of the audit trail.
GRANT EXECUTE ON FUNCTION
covenant.append_audit_entry(text, uuid, text, text, jsonb, timestamptz),
covenant.append_audit_entries(text, jsonb),
covenant.audit_entry_hash_v1(text, bigint, uuid, text, text, timestamptz, bytea, jsonb),
covenant.verify_audit_chain(text, bigint),
covenant.record_audit_verification_failure(text, text, text),
covenant.create_audit_checkpoint(text, text),
covenant.create_audit_partitions(integer),
covenant.audit_partition_health()
TO covenant_app, covenant_dba;

-- Operators' actions: break-glass only.
GRANT EXECUTE ON FUNCTION
covenant.approve_audit_probe(text, text, integer),
covenant.approve_audit_reset(text, text),
covenant.detach_audit_partition(text, text)
TO covenant_dba;

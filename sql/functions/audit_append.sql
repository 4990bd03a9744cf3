-- Appending to the audit chain (docs/audit.md).
--
-- Linearization: a transaction-scoped advisory lock per domain tag, taken in
-- one statement; the head is read in a later statement, so under READ
-- COMMITTED it sees every append committed before the lock was granted.
-- Under REPEATABLE READ or SERIALIZABLE the snapshot predates the lock wait
-- and the head read would be stale, so such callers are refused up front
-- (ISOLATION_LEVEL_UNSUPPORTED) instead of failing on the chain's unique
-- constraints (the backstop) on nearly every contended append.

CREATE OR REPLACE FUNCTION covenant._require_read_committed()
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM covenant._raise(
            'ISOLATION_LEVEL_UNSUPPORTED',
            pg_catalog.format(
                'this transaction is %s; covenant appends need READ COMMITTED',
                pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))
            ),
            NULL,
            'call covenant functions in a READ COMMITTED transaction (the default)'
        );
    END IF;
END;
$$;

-- CV005 for tags under system: (covenant's own chains, e.g. the record of
-- quarantine transitions) and account: (the ledger's chains, one per account,
-- written by the governed functions only), which only covenant's functions
-- append to.
CREATE OR REPLACE FUNCTION covenant._check_not_system(p_domain_tag text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.starts_with(p_domain_tag, 'system:') THEN
        PERFORM covenant._raise(
            'NOT_AUTHORIZED',
            pg_catalog.format('domain %s is reserved: covenant writes system: domains itself',
                              p_domain_tag)
        );
    END IF;
    IF pg_catalog.starts_with(p_domain_tag, 'account:') THEN
        PERFORM covenant._raise(
            'NOT_AUTHORIZED',
            pg_catalog.format('domain %s is reserved: account: domains are written by the '
                              || 'ledger''s governed functions only', p_domain_tag)
        );
    END IF;
END;
$$;

-- CV004 unless the tag has the canonical form.
CREATE OR REPLACE FUNCTION covenant._check_domain_tag(p_domain_tag text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_domain_tag IS NULL OR p_domain_tag !~ '^[a-z0-9][a-z0-9_.:-]{0,127}$' THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            pg_catalog.format('domain_tag %s is malformed', coalesce(pg_catalog.quote_literal(
                pg_catalog.left(p_domain_tag, 140)), 'NULL')),
            NULL,
            'a domain tag matches ^[a-z0-9][a-z0-9_.:-]{0,127}$'
        );
    END IF;
END;
$$;

-- CV004 unless the actor is a lower-case UUID or service:<name>.
CREATE OR REPLACE FUNCTION covenant._check_actor_id(p_actor_id text, p_where text DEFAULT '')
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_actor_id IS NULL OR p_actor_id !~ (
        '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
        || '|service:[a-z0-9][a-z0-9_.-]{0,63})$'
    ) THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            coalesce(p_where, '') || pg_catalog.format('actor_id %s is malformed',
                coalesce(pg_catalog.quote_literal(pg_catalog.left(p_actor_id, 80)), 'NULL')),
            NULL,
            'an actor is a lower-case UUID (a person) or service:<name> (a service)'
        );
    END IF;
END;
$$;

-- Validate one entry; CV004 names the entry (p_index) and the field.
CREATE OR REPLACE FUNCTION covenant._audit_check_entry(
    p_index integer,
    p_entry_id uuid,
    p_event_type text,
    p_actor_id text,
    p_payload jsonb,
    p_event_time timestamptz
) RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_where text := CASE WHEN p_index IS NULL THEN '' ELSE pg_catalog.format('entry %s: ', p_index) END;
BEGIN
    IF p_entry_id IS NULL THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', v_where || 'entry_id is required');
    END IF;
    IF p_event_type IS NULL OR p_event_type !~ '^[a-z0-9][a-z0-9_.:-]{0,127}$' THEN
        PERFORM covenant._raise(
            'INVALID_ARGUMENT',
            v_where || pg_catalog.format('event_type %s is malformed',
                coalesce(pg_catalog.quote_literal(pg_catalog.left(p_event_type, 140)), 'NULL')),
            NULL, 'an event type matches ^[a-z0-9][a-z0-9_.:-]{0,127}$'
        );
    END IF;
    PERFORM covenant._check_actor_id(p_actor_id, v_where);
    IF p_payload IS NULL THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', v_where || 'payload is required (use {} for none)');
    END IF;
    IF pg_catalog.octet_length(p_payload::text) > 1048576 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', v_where || 'payload exceeds 1 MiB');
    END IF;
    IF p_event_time IS NULL OR NOT pg_catalog.isfinite(p_event_time) THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', v_where || 'event_time must be a finite time');
    END IF;
END;
$$;

-- The one append path. Callers hold nothing; this takes the domain lock,
-- checks the quarantine, and appends every entry in order. Entries are
-- already validated. p_system bypasses the quarantine check: only for the
-- record of quarantine transitions itself (domain system:quarantine).
--
-- Fast path (no entry_id seen before): hashes are chained in one loop and
-- the links and rows inserted with one statement each; the whole batch gets
-- one created_at (the server clock once the lock is held).
CREATE OR REPLACE FUNCTION covenant._audit_append_many(
    p_domain_tag text,
    p_entry_ids uuid[],
    p_event_types text[],
    p_actor_ids text[],
    p_payloads jsonb[],
    p_event_times timestamptz[],
    p_system boolean DEFAULT FALSE
) RETURNS SETOF covenant.audit_receipt
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n integer := coalesce(pg_catalog.array_length(p_entry_ids, 1), 0);
    v_state text;
    v_seq bigint;
    v_prev bytea;
    v_now timestamptz;
    v_bad integer;
    v_inserted bigint;
    v_seen boolean;
    v_seqs bigint [];
    v_prevs bytea [];
    v_hashes bytea [];
BEGIN
    PERFORM covenant._require_read_committed();
    -- 1. the lock (this statement), then everything else in later statements
    PERFORM pg_catalog.pg_advisory_xact_lock(covenant._audit_lock_key(p_domain_tag));

    IF NOT p_system THEN
        SELECT q.state INTO v_state FROM covenant.audit_quarantine AS q
        WHERE q.domain_tag = p_domain_tag;
        IF v_state IS NOT NULL AND v_state <> 'closed' THEN
            PERFORM covenant._raise(
                'AUDIT_QUARANTINE',
                pg_catalog.format('domain %s is quarantined (%s)', p_domain_tag, v_state),
                NULL,
                'see docs/runbook.md: quarantine recovery'
            );
        END IF;
    END IF;

    -- 2. the head, read after the lock was granted
    SELECT h.seq, h.entry_hash INTO v_seq, v_prev
    FROM covenant.audit_trail_head AS h WHERE h.domain_tag = p_domain_tag;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    -- 3. an entry_id seen before, or twice in this batch: entry by entry
    IF v_n = 1 THEN
        v_seen := EXISTS (
            SELECT FROM covenant.audit_trail_chain_links AS l WHERE l.entry_id = p_entry_ids[1]
        );
    ELSE
        v_seen := EXISTS (
            SELECT FROM covenant.audit_trail_chain_links AS l WHERE l.entry_id = ANY(p_entry_ids)
        ) OR (SELECT count(DISTINCT u.id) FROM pg_catalog.unnest(p_entry_ids) AS u (id)) <> v_n;
    END IF;
    IF v_seen THEN
        RETURN QUERY SELECT * FROM covenant._audit_append_each(
            p_domain_tag, p_entry_ids, p_event_types, p_actor_ids, p_payloads, p_event_times,
            v_seq, v_prev
        );
        RETURN;
    END IF;

    v_now := pg_catalog.clock_timestamp();
    IF v_n = 1 THEN
        IF p_event_times[1] < v_now - INTERVAL '5 minutes'
           OR p_event_times[1] > v_now + INTERVAL '5 minutes' THEN
            v_bad := 1;
        END IF;
    ELSE
        SELECT min(u.o) INTO v_bad
        FROM pg_catalog.unnest(p_event_times) WITH ORDINALITY AS u (t, o)
        WHERE u.t < v_now - INTERVAL '5 minutes' OR u.t > v_now + INTERVAL '5 minutes';
    END IF;
    IF v_bad IS NOT NULL THEN
        PERFORM covenant._raise(
            'EVENT_TIME_SKEW',
            pg_catalog.format('event_time %s is more than 5 minutes from the server clock %s',
                              p_event_times[v_bad], v_now)
        );
    END IF;

    -- 4. chain the hashes
    FOR i IN 1 .. v_n LOOP
        v_seqs[i] := v_seq + i;
        v_prevs[i] := v_prev;
        v_prev := covenant.audit_entry_hash_v1(
            p_domain_tag, v_seq + i, p_entry_ids[i], p_event_types[i], p_actor_ids[i],
            p_event_times[i], v_prev, p_payloads[i]
        );
        v_hashes[i] := v_prev;
    END LOOP;

    -- 5. links first: their unique constraints are the backstop against forks
    -- (multi-argument unnest is FROM-clause syntax: it cannot be schema-qualified)
    INSERT INTO covenant.audit_trail_chain_links
        (domain_tag, seq, entry_id, previous_hash, entry_hash, created_at)
    SELECT p_domain_tag, u.s, u.id, u.ph, u.h, v_now
    FROM unnest(v_seqs, p_entry_ids, v_prevs, v_hashes) AS u (s, id, ph, h)
    ON CONFLICT (entry_id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted <> v_n THEN
        -- an entry_id of this batch committed meanwhile on another domain's chain
        PERFORM covenant._raise(
            'IDEMPOTENCY_CONFLICT', 'an entry_id of this batch was used concurrently on another domain'
        );
    END IF;
    INSERT INTO covenant.audit_trail (
        entry_id, domain_tag, seq, event_type, actor_id, payload, event_time,
        created_at, previous_hash, entry_hash, hash_version
    )
    SELECT u.id, p_domain_tag, u.s, u.et, u.a, u.p, u.t, v_now, u.ph, u.h, 1
    FROM unnest(
        p_entry_ids, v_seqs, p_event_types, p_actor_ids, p_payloads, p_event_times, v_prevs, v_hashes
    ) AS u (id, s, et, a, p, t, ph, h);

    INSERT INTO covenant.audit_trail_head AS h (domain_tag, seq, entry_id, entry_hash, updated_at)
    VALUES (p_domain_tag, v_seq + v_n, p_entry_ids[v_n], v_prev, v_now)
    ON CONFLICT (domain_tag) DO UPDATE
    SET seq = excluded.seq, entry_id = excluded.entry_id, entry_hash = excluded.entry_hash,
        updated_at = excluded.updated_at;

    RETURN QUERY
    SELECT u.id, p_domain_tag, u.s, u.ph, u.h, v_now, FALSE
    FROM unnest(p_entry_ids, v_seqs, v_prevs, v_hashes) WITH ORDINALITY AS u (id, s, ph, h, o)
    ORDER BY u.o;
END;
$$;

-- The entry-by-entry path, for batches holding an entry_id seen before (or
-- twice): each such entry is a duplicate (same content) or a conflict. The
-- caller holds the domain lock and passes the head.
CREATE OR REPLACE FUNCTION covenant._audit_append_each(
    p_domain_tag text,
    p_entry_ids uuid[],
    p_event_types text[],
    p_actor_ids text[],
    p_payloads jsonb[],
    p_event_times timestamptz[],
    p_seq bigint,
    p_prev bytea
) RETURNS SETOF covenant.audit_receipt
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq bigint;
    v_prev bytea;
    v_hash bytea;
    v_now timestamptz;
    v_link covenant.audit_trail_chain_links%ROWTYPE;
    v_row covenant.audit_trail%ROWTYPE;
    v_appended boolean := FALSE;
    v_last_id uuid;
    i integer;
BEGIN
    v_seq := p_seq;
    v_prev := p_prev;
    FOR i IN 1 .. coalesce(pg_catalog.array_length(p_entry_ids, 1), 0) LOOP
        -- idempotency: the same entry_id again is the same entry, or a conflict
        SELECT l.* INTO v_link FROM covenant.audit_trail_chain_links AS l
        WHERE l.entry_id = p_entry_ids[i];
        IF FOUND THEN
            SELECT t.* INTO v_row FROM covenant.audit_trail AS t
            WHERE t.domain_tag = v_link.domain_tag AND t.seq = v_link.seq
              AND t.created_at = v_link.created_at;
            IF v_link.domain_tag = p_domain_tag AND FOUND
               AND v_row.event_type = p_event_types[i] AND v_row.actor_id = p_actor_ids[i]
               AND v_row.payload::text = p_payloads[i]::text THEN
                RETURN NEXT ROW(v_link.entry_id, v_link.domain_tag, v_link.seq, v_link.previous_hash,
                                v_link.entry_hash, v_link.created_at, TRUE)::covenant.audit_receipt;
                CONTINUE;
            END IF;
            PERFORM covenant._raise(
                'IDEMPOTENCY_CONFLICT',
                pg_catalog.format('entry_id %s was already used for a different entry', p_entry_ids[i]),
                pg_catalog.format('existing entry: domain %s, seq %s', v_link.domain_tag, v_link.seq)
            );
        END IF;

        v_now := pg_catalog.clock_timestamp();
        IF p_event_times[i] < v_now - INTERVAL '5 minutes'
           OR p_event_times[i] > v_now + INTERVAL '5 minutes' THEN
            PERFORM covenant._raise(
                'EVENT_TIME_SKEW',
                pg_catalog.format('event_time %s is more than 5 minutes from the server clock %s',
                                  p_event_times[i], v_now)
            );
        END IF;

        v_seq := v_seq + 1;
        v_hash := covenant.audit_entry_hash_v1(
            p_domain_tag, v_seq, p_entry_ids[i], p_event_types[i], p_actor_ids[i],
            p_event_times[i], v_prev, p_payloads[i]
        );
        INSERT INTO covenant.audit_trail_chain_links
            (domain_tag, seq, entry_id, previous_hash, entry_hash, created_at)
        VALUES (p_domain_tag, v_seq, p_entry_ids[i], v_prev, v_hash, v_now)
        ON CONFLICT (entry_id) DO NOTHING;
        IF NOT FOUND THEN
            -- the same entry_id committed meanwhile on another domain's chain
            PERFORM covenant._raise(
                'IDEMPOTENCY_CONFLICT',
                pg_catalog.format('entry_id %s was used concurrently on another domain',
                                  p_entry_ids[i])
            );
        END IF;
        INSERT INTO covenant.audit_trail (
            entry_id, domain_tag, seq, event_type, actor_id, payload, event_time,
            created_at, previous_hash, entry_hash, hash_version
        ) VALUES (
            p_entry_ids[i], p_domain_tag, v_seq, p_event_types[i], p_actor_ids[i], p_payloads[i],
            p_event_times[i], v_now, v_prev, v_hash, 1
        );
        RETURN NEXT ROW(p_entry_ids[i], p_domain_tag, v_seq, v_prev, v_hash, v_now, FALSE)
            ::covenant.audit_receipt;
        v_prev := v_hash;
        v_last_id := p_entry_ids[i];
        v_appended := TRUE;
    END LOOP;

    IF v_appended THEN
        INSERT INTO covenant.audit_trail_head AS h (domain_tag, seq, entry_id, entry_hash, updated_at)
        VALUES (p_domain_tag, v_seq, v_last_id, v_prev, v_now)
        ON CONFLICT (domain_tag) DO UPDATE
        SET seq = excluded.seq, entry_id = excluded.entry_id, entry_hash = excluded.entry_hash,
            updated_at = excluded.updated_at;
    END IF;
    RETURN;
END;
$$;

-- Append one entry. SPEC §3.3.
CREATE OR REPLACE FUNCTION covenant.append_audit_entry(
    p_domain_tag text,
    p_entry_id uuid,
    p_event_type text,
    p_actor_id text,
    p_payload jsonb,
    p_event_time timestamptz DEFAULT now()
) RETURNS covenant.audit_receipt
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_receipt covenant.audit_receipt;
BEGIN
    -- the common case in one expression; the checkers below only run to say
    -- what is wrong
    IF NOT coalesce(
        p_domain_tag ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'
        AND NOT pg_catalog.starts_with(p_domain_tag, 'system:')
        AND NOT pg_catalog.starts_with(p_domain_tag, 'account:')
        AND p_entry_id IS NOT NULL
        AND p_event_type ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'
        AND p_actor_id ~ ('^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
                          || '|service:[a-z0-9][a-z0-9_.-]{0,63})$')
        AND p_payload IS NOT NULL
        AND pg_catalog.octet_length(p_payload::text) <= 1048576
        AND pg_catalog.isfinite(p_event_time),
        FALSE
    ) THEN
        PERFORM covenant._check_domain_tag(p_domain_tag);
        PERFORM covenant._check_not_system(p_domain_tag);
        PERFORM covenant._audit_check_entry(
            NULL, p_entry_id, p_event_type, p_actor_id, p_payload, p_event_time
        );
    END IF;
    SELECT r.* INTO STRICT v_receipt FROM covenant._audit_append_many(
        p_domain_tag, ARRAY[p_entry_id], ARRAY[p_event_type], ARRAY[p_actor_id],
        ARRAY[p_payload], ARRAY[p_event_time]
    ) AS r;
    RETURN v_receipt;
END;
$$;

-- Append a batch to one domain in one call: one lock, one round trip.
-- p_entries: a JSON array of {"entry_id", "event_type", "actor_id",
-- "payload", "event_time"?}; event_time defaults to now(). All or nothing:
-- one bad entry refuses the batch (CV004 names its index, from 0).
CREATE OR REPLACE FUNCTION covenant.append_audit_entries(
    p_domain_tag text,
    p_entries jsonb
) RETURNS SETOF covenant.audit_receipt
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids uuid [];
    v_types text [];
    v_actors text [];
    v_payloads jsonb [];
    v_times timestamptz [];
    v_entry jsonb;
    v_index integer := 0;
    v_id uuid;
    v_time timestamptz;
    v_parsed boolean := FALSE;
BEGIN
    PERFORM covenant._check_domain_tag(p_domain_tag);
    PERFORM covenant._check_not_system(p_domain_tag);
    IF p_entries IS NULL OR pg_catalog.jsonb_typeof(p_entries) <> 'array' THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_entries must be a JSON array of entries');
    END IF;
    IF pg_catalog.jsonb_array_length(p_entries) = 0
       OR pg_catalog.jsonb_array_length(p_entries) > 10000 THEN
        PERFORM covenant._raise('INVALID_ARGUMENT', 'a batch holds 1 to 10000 entries');
    END IF;
    -- fast path: parse and check the whole batch set-wise ...
    BEGIN
        SELECT
            pg_catalog.array_agg((t.e ->> 'entry_id')::uuid ORDER BY t.o),
            pg_catalog.array_agg(t.e ->> 'event_type' ORDER BY t.o),
            pg_catalog.array_agg(t.e ->> 'actor_id' ORDER BY t.o),
            pg_catalog.array_agg(t.e -> 'payload' ORDER BY t.o),
            pg_catalog.array_agg(coalesce((t.e ->> 'event_time')::timestamptz, now()) ORDER BY t.o),
            bool_and(
                pg_catalog.jsonb_typeof(t.e) = 'object'
                AND t.e ->> 'entry_id' IS NOT NULL
                AND coalesce(t.e ->> 'event_type' ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$', FALSE)
                AND coalesce(t.e ->> 'actor_id' ~ (
                    '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
                    || '|service:[a-z0-9][a-z0-9_.-]{0,63})$'), FALSE)
                AND t.e -> 'payload' IS NOT NULL
                AND pg_catalog.octet_length((t.e -> 'payload')::text) <= 1048576
                AND pg_catalog.isfinite(coalesce((t.e ->> 'event_time')::timestamptz, now()))
            )
        INTO v_ids, v_types, v_actors, v_payloads, v_times, v_parsed
        FROM pg_catalog.jsonb_array_elements(p_entries) WITH ORDINALITY AS t (e, o);
    EXCEPTION WHEN data_exception THEN  -- any bad uuid or time: find it below
        v_parsed := FALSE;
    END;
    -- ... and only when something is wrong, find the first bad entry and say why
    IF NOT v_parsed THEN
        FOR v_entry IN SELECT e FROM pg_catalog.jsonb_array_elements(p_entries) AS e LOOP
            IF pg_catalog.jsonb_typeof(v_entry) <> 'object' THEN
                PERFORM covenant._raise('INVALID_ARGUMENT',
                                        pg_catalog.format('entry %s is not a JSON object', v_index));
            END IF;
            BEGIN
                v_id := (v_entry ->> 'entry_id')::uuid;
            EXCEPTION WHEN data_exception THEN
                PERFORM covenant._raise('INVALID_ARGUMENT',
                                        pg_catalog.format('entry %s: entry_id is not a UUID', v_index));
            END;
            BEGIN
                v_time := coalesce((v_entry ->> 'event_time')::timestamptz, now());
            EXCEPTION WHEN data_exception THEN
                PERFORM covenant._raise('INVALID_ARGUMENT',
                                        pg_catalog.format('entry %s: event_time is not a time', v_index));
            END;
            PERFORM covenant._audit_check_entry(
                v_index, v_id, v_entry ->> 'event_type', v_entry ->> 'actor_id',
                v_entry -> 'payload', v_time
            );
            v_index := v_index + 1;
        END LOOP;
        PERFORM covenant._raise('INVALID_ARGUMENT', 'p_entries holds an invalid entry');
    END IF;
    RETURN QUERY SELECT r.* FROM covenant._audit_append_many(
        p_domain_tag, v_ids, v_types, v_actors, v_payloads, v_times
    ) AS r;
END;
$$;

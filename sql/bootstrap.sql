-- covenant bootstrap: run by `covenant migrate` as the connecting login, under
-- the migration lock, before any numbered migration. Idempotent.
--
-- It does only what a numbered migration cannot do as covenant_migrator:
-- cluster-wide roles, the schema itself, the pgcrypto extension, the
-- hardening of schema public (owned by the database owner), and the runner's
-- own bookkeeping tables. Everything else is a numbered migration or a
-- repeatable definition under sql/.

-- Nothing here may resolve through the login's search_path: a function
-- planted in a writable schema (say public.pg_catalog.format(text, text) in a database
-- upgraded from PostgreSQL 14) would otherwise run with this login's rights.
SET LOCAL search_path = pg_catalog, pg_temp;
-- The DDL guard (where installed) lets the runner's DDL through.
SELECT pg_catalog.set_config('covenant.ddl', 'migrate', TRUE);

-- 1. Roles (cluster-wide). A concurrent bootstrap in another database of the
--    same cluster may create a role between our check and our CREATE (the
--    migration lock is per database), hence the handler.
DO $bootstrap$
DECLARE
    v_role text;
    v_can_set boolean;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['covenant_migrator', 'covenant_app', 'covenant_dba'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles
                    WHERE rolname = current_user) THEN
                RAISE EXCEPTION 'role % does not exist and % cannot create it', v_role, current_user
                    USING ERRCODE = '42501',
                          HINT = 'run covenant migrate as a role with CREATEROLE (or a superuser) once';
            END IF;
            BEGIN
                EXECUTE pg_catalog.format(
                    'CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION',
                    v_role
                );
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- created concurrently by a run on another database of this
                -- cluster (which surfaces as either error)
                NULL;
            END;
        END IF;
        -- Attributes are part of the security model: repair drift, or refuse.
        IF EXISTS (
            SELECT FROM pg_catalog.pg_roles
            WHERE rolname = v_role
              AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole
                   OR rolreplication)
        ) THEN
            BEGIN
                EXECUTE pg_catalog.format(
                    'ALTER ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION',
                    v_role
                );
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % has attributes covenant forbids and % cannot reset them',
                    v_role, current_user
                    USING ERRCODE = '42501',
                          HINT = pg_catalog.format(
                              'a superuser must run: ALTER ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS '
                              'NOCREATEDB NOCREATEROLE NOREPLICATION', v_role);
            END;
        END IF;
    END LOOP;

    -- The deploying login must be able to SET ROLE covenant_migrator. On
    -- PostgreSQL 16+ a CREATEROLE creator holds the role WITH ADMIN but
    -- without SET or INHERIT, so MEMBER is not enough: ask for SET.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
            EXECUTE 'SELECT pg_catalog.pg_has_role(current_user, ''covenant_migrator'', ''SET'')'
                INTO v_can_set;
        ELSE
            v_can_set := pg_catalog.pg_has_role(current_user, 'covenant_migrator', 'MEMBER');
        END IF;
        IF NOT v_can_set THEN
            BEGIN
                IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
                    EXECUTE pg_catalog.format(
                        'GRANT covenant_migrator TO %I WITH INHERIT TRUE, SET TRUE', current_user
                    );
                ELSE
                    EXECUTE pg_catalog.format('GRANT covenant_migrator TO %I', current_user);
                END IF;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION '% is not a member of covenant_migrator and cannot grant it',
                    current_user
                    USING ERRCODE = '42501',
                          HINT = pg_catalog.format(
                              'a superuser must run: GRANT covenant_migrator TO %I', current_user
                          );
            END;
        END IF;
    END IF;
END
$bootstrap$;

-- 2. The schema, owned by covenant_migrator.
DO $bootstrap$
BEGIN
    IF NOT pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE')
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'covenant') THEN
        RAISE EXCEPTION '% has no CREATE privilege on database %', current_user, pg_catalog.current_database()
            USING ERRCODE = '42501',
                  HINT = pg_catalog.format('a superuser must run: GRANT CREATE ON DATABASE %I TO %I',
                                pg_catalog.current_database(), current_user);
    END IF;
END
$bootstrap$;

CREATE SCHEMA IF NOT EXISTS covenant AUTHORIZATION covenant_migrator;
ALTER SCHEMA covenant OWNER TO covenant_migrator;
REVOKE ALL ON SCHEMA covenant FROM PUBLIC;

-- 3. pgcrypto. If the database already has it, it stays where it is;
--    otherwise it goes into its own schema, covenant_ext, so that its
--    (PUBLIC-executable) functions never sit in schema covenant.
DO $bootstrap$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto') THEN
        CREATE SCHEMA IF NOT EXISTS covenant_ext AUTHORIZATION covenant_migrator;
        REVOKE ALL ON SCHEMA covenant_ext FROM PUBLIC;
        CREATE EXTENSION pgcrypto WITH SCHEMA covenant_ext;
    END IF;
END
$bootstrap$;

-- 4. Schema public: PUBLIC must not CREATE there (the PostgreSQL 14 default,
--    and it survives pg_upgrade to 15+).
DO $bootstrap$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'public')
       AND pg_catalog.has_schema_privilege('public', 'public', 'CREATE') THEN
        BEGIN
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'PUBLIC can CREATE in schema public and % cannot revoke it', current_user
                USING ERRCODE = '42501',
                      HINT = 'the owner of schema public (the database owner on PostgreSQL 15+, '
                             'the bootstrap superuser on 14) must run: '
                             'REVOKE CREATE ON SCHEMA public FROM PUBLIC';
        END;
        -- REVOKE by a non-owner only warns; check that it took.
        IF pg_catalog.has_schema_privilege('public', 'public', 'CREATE') THEN
            RAISE EXCEPTION 'PUBLIC can CREATE in schema public and % cannot revoke it', current_user
                USING ERRCODE = '42501',
                      HINT = 'the owner of schema public (the database owner on PostgreSQL 15+, '
                             'the bootstrap superuser on 14) must run: '
                             'REVOKE CREATE ON SCHEMA public FROM PUBLIC';
        END IF;
    END IF;
END
$bootstrap$;

-- 5. The runner's bookkeeping, owned by covenant_migrator like everything else.
SET LOCAL ROLE covenant_migrator;

CREATE TABLE IF NOT EXISTS covenant.schema_migrations (
    version integer PRIMARY KEY CONSTRAINT schema_migrations_version_positive CHECK (version > 0),
    name text NOT NULL,
    checksum text NOT NULL CONSTRAINT schema_migrations_checksum_sha256
    CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_by text NOT NULL DEFAULT session_user,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    execution_ms integer NOT NULL
);

CREATE TABLE IF NOT EXISTS covenant.schema_repeatables (
    path text PRIMARY KEY,
    checksum text NOT NULL CONSTRAINT schema_repeatables_checksum_sha256
    CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_by text NOT NULL DEFAULT session_user,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

RESET ROLE;

"""A normalized, version-independent description of the installed schema.

Used to prove that "all migrations from zero + the repeatable definitions"
give the database the committed snapshot (``docs/schema-snapshot.txt``)
describes, and that re-running or upgrading gives the same database.
``covenant schema snapshot`` prints it; ``make schema-snapshot`` rewrites the
committed file after an intended change.

It reads only the catalog (no pg_dump), so it does not depend on the client
version, and it leaves out what differs between installs (OIDs, the name of
the deploying login, timestamps).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import tuple_row

# Each query returns one text column; lines are sorted at the end, so the
# order of queries and rows does not matter.
_QUERIES: tuple[str, ...] = (
    # roles
    """
    SELECT format('role %s login=%s super=%s bypassrls=%s createdb=%s createrole=%s '
                  'replication=%s inherit=%s',
                  rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole,
                  rolreplication, rolinherit)
    FROM pg_catalog.pg_roles WHERE rolname ~ '^covenant_(migrator|app|dba)$'
    """,
    # memberships among covenant roles only
    """
    SELECT format('membership %s in %s admin=%s', m.rolname, r.rolname, am.admin_option)
    FROM pg_catalog.pg_auth_members AS am
    JOIN pg_catalog.pg_roles AS r ON r.oid = am.roleid
    JOIN pg_catalog.pg_roles AS m ON m.oid = am.member
    WHERE r.rolname ~ '^covenant_(migrator|app|dba)$'
      AND m.rolname ~ '^covenant_(migrator|app|dba)$'
    """,
    # schemas
    """
    SELECT format('schema %s owner=%s acl=%s', n.nspname, pg_catalog.pg_get_userbyid(n.nspowner),
                  (SELECT string_agg(a::text, ',' ORDER BY a::text)
                   FROM unnest(n.nspacl) AS a))
    FROM pg_catalog.pg_namespace AS n WHERE n.nspname IN ('covenant', 'covenant_ext')
    """,
    # relations
    """
    SELECT format('relation %s.%s kind=%s owner=%s rls=%s force_rls=%s options=%s '
                  'partition_key=%s partition_bound=%s acl=%s',
                  n.nspname, c.relname, c.relkind, pg_catalog.pg_get_userbyid(c.relowner),
                  c.relrowsecurity, c.relforcerowsecurity, c.reloptions,
                  pg_catalog.pg_get_partkeydef(c.oid),
                  pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) AS a))
    FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'covenant' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    """,
    # columns
    """
    SELECT format('column %s.%s.%s %s notnull=%s default=%s identity=%s generated=%s',
                  n.nspname, c.relname, a.attname,
                  pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated)
    FROM pg_catalog.pg_attribute AS a
    JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'covenant' AND a.attnum > 0 AND NOT a.attisdropped
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """,
    # constraints (tables and domains)
    """
    SELECT format('constraint %s.%s %s: %s', n.nspname,
                  coalesce(c.relname, 'domain ' || t.typname), con.conname,
                  pg_catalog.pg_get_constraintdef(con.oid))
    FROM pg_catalog.pg_constraint AS con
    JOIN pg_catalog.pg_namespace AS n ON n.oid = con.connamespace
    LEFT JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
    LEFT JOIN pg_catalog.pg_type AS t ON t.oid = con.contypid
    WHERE n.nspname = 'covenant'
    """,
    # indexes
    """
    SELECT format('index %s', pg_catalog.pg_get_indexdef(i.indexrelid))
    FROM pg_catalog.pg_index AS i
    JOIN pg_catalog.pg_class AS c ON c.oid = i.indrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'covenant'
    """,
    # functions: signature, properties, privileges and a digest of the definition
    """
    SELECT format('function %s.%s(%s) returns %s kind=%s lang=%s volatility=%s secdef=%s '
                  'strict=%s leakproof=%s config=%s owner=%s acl=%s definition_md5=%s',
                  n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
                  pg_catalog.pg_get_function_result(p.oid), p.prokind, l.lanname,
                  p.provolatile, p.prosecdef, p.proisstrict, p.proleakproof, p.proconfig,
                  pg_catalog.pg_get_userbyid(p.proowner),
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) AS a),
                  md5(CASE WHEN p.prokind = 'a' THEN p.prosrc
                           ELSE pg_catalog.pg_get_functiondef(p.oid) END))
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
    WHERE n.nspname = 'covenant'
    """,
    # types and domains defined in the schema (not the row types of tables)
    """
    SELECT format('type %s.%s typtype=%s base=%s notnull=%s owner=%s enum=%s',
                  n.nspname, t.typname, t.typtype,
                  CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)
                  END,
                  t.typnotnull, pg_catalog.pg_get_userbyid(t.typowner),
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                   FROM pg_catalog.pg_enum AS e WHERE e.enumtypid = t.oid))
    FROM pg_catalog.pg_type AS t
    JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
    WHERE n.nspname = 'covenant' AND t.typtype IN ('d', 'e', 'c', 'r')
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
                      WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    """,
    # triggers (with their firing mode: O origin, A always, R replica, D disabled)
    """
    SELECT format('trigger %s enabled=%s', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_catalog.pg_trigger AS t
    JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'covenant' AND NOT t.tgisinternal
    """,
    # row-level security policies
    """
    SELECT format('policy %s.%s %s permissive=%s cmd=%s roles=%s using=%s check=%s',
                  schemaname, tablename, policyname, permissive, cmd, roles, qual, with_check)
    FROM pg_catalog.pg_policies WHERE schemaname = 'covenant'
    """,
    # default privileges of the owner role
    """
    SELECT format('default_acl %s schema=%s objtype=%s acl=%s',
                  pg_catalog.pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype,
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.defaclacl) AS a))
    FROM pg_catalog.pg_default_acl AS d
    LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = d.defaclnamespace
    WHERE pg_catalog.pg_get_userbyid(d.defaclrole) ~ '^covenant_(migrator|app|dba)$'
    """,
    # event triggers covenant installs
    """
    SELECT format('event_trigger %s event=%s enabled=%s function=%s tags=%s',
                  e.evtname, e.evtevent, e.evtenabled, e.evtfoid::regprocedure, e.evttags)
    FROM pg_catalog.pg_event_trigger AS e WHERE e.evtname LIKE 'covenant%'
    """,
    # extensions covenant relies on
    """
    SELECT format('extension %s', e.extname)
    FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pgcrypto'
    """,
)


def snapshot(conn: psycopg.Connection[Any]) -> str:
    """The sorted, newline-terminated description of covenant's schema."""
    lines: list[str] = []
    for query in _QUERIES:
        # No parameters: the text goes as is, so format()'s %s is not a placeholder.
        cur = conn.cursor(row_factory=tuple_row)
        lines.extend(str(row[0]) for row in cur.execute(query.encode()).fetchall())
    return "\n".join(sorted(lines)) + "\n"

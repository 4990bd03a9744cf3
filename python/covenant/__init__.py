"""covenant: a governance substrate that lives in PostgreSQL.

The logic is versioned SQL (``migrations/`` and ``sql/``); this package is the
thin layer around it: the migration runner (:mod:`covenant.migrate`), the
embedded cluster (:mod:`covenant.embedded`), configuration
(:mod:`covenant.config`), the error model (:mod:`covenant.errors`) and the
connection module (:mod:`covenant.db`).
"""

__version__ = "0.1.0"

# PostgreSQL 15 with pgTAP (pgcrypto ships with the server's contrib).
# For users who run containers; not exercised on covenant's own CI machines,
# which have no Docker engine (see docker/README.md).
FROM postgres:15-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl \
    && rm -rf /var/lib/apt/lists/*

# The covenant package with its dev tools, to run `covenant migrate` and the
# test suites against the `db` service of compose.yaml.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       make postgresql-client-15 libtap-parser-sourcehandler-pgtap-perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /covenant
COPY . .
RUN python -m venv .venv && .venv/bin/pip install --no-cache-dir -e '.[dev]'
ENV PATH="/covenant/.venv/bin:${PATH}"

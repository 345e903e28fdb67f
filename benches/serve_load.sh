#!/usr/bin/env bash
# Load benchmark of `taglake serve`: CLIENTS concurrent psycopg clients
# issuing audience counts for SECONDS, then the same load on PostgreSQL 15
# holding the same tags as boolean columns, in the same run.
#   benches/serve_load.sh [MEMBERS] [SECONDS] [CLIENTS]
# Defaults: 10,000,000 members, 60 s, 32 clients. Needs the tagged warehouse
# and tag export that benches/audience_vs_duckdb.sh MEMBERS leaves under
# ~/.cache/taglake-bench. Builds taglake in release mode, installs the
# pinned peers (benches/requirements.txt: psycopg and pyarrow among them)
# into benches/.venv; PostgreSQL runs as the system user
# taglake_bench (created if missing; PostgreSQL refuses to run as root).
# Run it alone: clients and servers share this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-10000000}"
SECONDS_="${2:-60}"
CLIENTS="${3:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release -p taglake --bin taglake
[ -x benches/.venv/bin/python ] || python3 -m venv benches/.venv
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
cd benches
exec .venv/bin/python serve_load.py --taglake "$CARGO_TARGET_DIR/release/taglake" \
  --members "$MEMBERS" --seconds "$SECONDS_" --clients "$CLIENTS"

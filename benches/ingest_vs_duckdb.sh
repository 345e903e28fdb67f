#!/usr/bin/env bash
# Ingest benchmark: taglake vs DuckDB on the same generated CSV orders.
#   benches/ingest_vs_duckdb.sh [ORDER_LINES] [RUNS]
# Builds taglake in release mode, installs the pinned peers
# (benches/requirements.txt: DuckDB among them) into benches/.venv, then
# runs benches/ingest_vs_duckdb.py (see there for what is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
LINES="${1:-10000000}"
RUNS="${2:-3}"
cargo build --release --locked --bin taglake
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
exec benches/.venv/bin/python benches/ingest_vs_duckdb.py \
  --taglake "$TARGET_DIR/release/taglake" --lines "$LINES" --runs "$RUNS"

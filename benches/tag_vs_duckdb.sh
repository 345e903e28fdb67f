#!/usr/bin/env bash
# Tag benchmark: taglake vs DuckDB computing the same features and tags
# ("full refresh") from the same warehouse Parquet files.
#   benches/tag_vs_duckdb.sh [MEMBERS] [RUNS]
# MEMBERS defaults to 1,000,000 with 5 order lines per member and year over
# 2 years (~10 M order lines; set LINES_PER_MEMBER_YEAR to change it).
# Builds taglake in release mode, installs the pinned peers
# (benches/requirements.txt: DuckDB among them) into benches/.venv, then
# runs benches/tag_vs_duckdb.py (see there for what is measured). Generated
# data and the ingested warehouse are kept under $TAGLAKE_BENCH_DIR
# (default ~/.cache/taglake-bench) and reused by later runs of the same size.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-1000000}"
RUNS="${2:-3}"
LINES_PER_MEMBER_YEAR="${LINES_PER_MEMBER_YEAR:-5}"
DUCKDB_THREADS="${DUCKDB_THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release --bin taglake
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
exec benches/.venv/bin/python benches/tag_vs_duckdb.py \
  --taglake "$CARGO_TARGET_DIR/release/taglake" --members "$MEMBERS" --runs "$RUNS" \
  --lines-per-member-year "$LINES_PER_MEMBER_YEAR" --duckdb-threads "$DUCKDB_THREADS"

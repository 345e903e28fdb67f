#!/usr/bin/env bash
# Audience-count benchmark: taglake (audience API and SQL) vs DuckDB (Parquet
# file and in-memory table), ClickHouse via chdb (groupBitmap) and pyroaring,
# on the same tags of the same warehouse, in the same run.
#   benches/audience_vs_duckdb.sh [MEMBERS] [RUNS]
# MEMBERS defaults to 1,000,000, RUNS (timed runs per expression and side) to
# 200. Uses the tagged warehouse ~/.cache/taglake-bench/audience-MEMBERS or
# tag-MEMBERS-5 (the one tag_vs_duckdb.sh and cluster_vs_sklearn.sh build);
# when neither exists, builds taglake too and makes audience-MEMBERS
# (generate, ingest, tag). Builds audience_side in release mode, installs
# the pinned peers (benches/requirements.txt: DuckDB, chdb, pyroaring,
# pyarrow among them) into benches/.venv, then runs
# benches/audience_vs_duckdb.py (see there for what is measured). Do not run
# two benchmarks at once, nor anything else heavy: the timings are in
# microseconds and milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-1000000}"
RUNS="${2:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
BUILD=(-p taglake-benches --bin audience_side)
EXTRA=()
if [ ! -d "$HOME/.cache/taglake-bench/audience-$MEMBERS/warehouse/tags/_delta_log" ] &&
   [ ! -d "$HOME/.cache/taglake-bench/tag-$MEMBERS-5/warehouse/tags/_delta_log" ]; then
  BUILD+=(-p taglake --bin taglake)
  EXTRA=(--taglake "$CARGO_TARGET_DIR/release/taglake")
fi
cargo build --release "${BUILD[@]}"
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
exec benches/.venv/bin/python benches/audience_vs_duckdb.py \
  --side "$CARGO_TARGET_DIR/release/audience_side" --members "$MEMBERS" --runs "$RUNS" "${EXTRA[@]}"

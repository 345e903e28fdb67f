#!/usr/bin/env bash
# Cluster benchmark: the tag refresh and a 6-tag audience count, embedded
# vs. on a Ballista cluster of 1 and of 2 executors on this machine.
#   benches/cluster.sh [MEMBERS] [RUNS]
# MEMBERS defaults to 1,000,000 (5 order lines per member and year, 2 years;
# the warehouse is shared with benches/tag_vs_duckdb.sh under
# $TAGLAKE_BENCH_DIR, default ~/.cache/taglake-bench). Builds taglake in
# release mode with --features distributed; see benches/cluster.py.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-1000000}"
RUNS="${2:-3}"
LINES_PER_MEMBER_YEAR="${LINES_PER_MEMBER_YEAR:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release --features distributed --bin taglake
exec python3 benches/cluster.py \
  --taglake "$CARGO_TARGET_DIR/release/taglake" --members "$MEMBERS" --runs "$RUNS" \
  --lines-per-member-year "$LINES_PER_MEMBER_YEAR"

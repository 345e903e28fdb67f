#!/usr/bin/env bash
# Cluster mode (distributed) vs embedded: the tag refresh and a 6-tag
# audience count, embedded vs. with --cluster on a Ballista cluster of 1 and
# of 2 executors on this machine. (Not the k-means communities of
# `taglake cluster`: that is benches/cluster_vs_sklearn.sh.)
#   benches/distributed_vs_embedded.sh [MEMBERS] [RUNS]
# MEMBERS defaults to 1,000,000 (5 order lines per member and year, 2 years;
# the warehouse is shared with benches/tag_vs_duckdb.sh under
# $TAGLAKE_BENCH_DIR, default ~/.cache/taglake-bench). Builds taglake in
# release mode with --features distributed; see benches/distributed_vs_embedded.py.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-1000000}"
RUNS="${2:-3}"
LINES_PER_MEMBER_YEAR="${LINES_PER_MEMBER_YEAR:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release --features distributed --bin taglake
exec python3 benches/distributed_vs_embedded.py \
  --taglake "$CARGO_TARGET_DIR/release/taglake" --members "$MEMBERS" --runs "$RUNS" \
  --lines-per-member-year "$LINES_PER_MEMBER_YEAR"

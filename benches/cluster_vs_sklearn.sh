#!/usr/bin/env bash
# Clustering benchmark: taglake (linfa k-means + blocked assignment) vs
# scikit-learn KMeans on the same standardized matrix, in the same run.
#   benches/cluster_vs_sklearn.sh [MEMBERS] [RUNS]
# MEMBERS defaults to 1,000,000 (5 order lines per member and year, 2 years).
# Builds taglake and kmeans_side in release mode, installs the pinned peers
# (benches/requirements.txt: scikit-learn among them) into benches/.venv,
# then runs benches/cluster_vs_sklearn.py (see there for what
# is measured). The warehouse is shared with tag_vs_duckdb.sh under
# ~/.cache/taglake-bench and reused. Do not run two benchmarks at once.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-1000000}"
RUNS="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release -p taglake --bin taglake -p taglake-benches --bin kmeans_side
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
exec benches/.venv/bin/python benches/cluster_vs_sklearn.py \
  --taglake "$CARGO_TARGET_DIR/release/taglake" --side "$CARGO_TARGET_DIR/release/kmeans_side" \
  --members "$MEMBERS" --runs "$RUNS"

#!/usr/bin/env bash
# The nightly pipeline at a brand's scale, step by step, with DuckDB doing
# the same day's dedup-append and member upsert on the same files.
#   benches/seed_scale.sh [MEMBERS] [NIGHTS] [--no-duckdb]
# MEMBERS defaults to 10,000,000 (5 order lines per member and year over 2
# years: ~100 M lines); 42000000 is the brand this project is built for.
# Builds taglake in release mode, installs the pinned peers
# (benches/requirements.txt: DuckDB among them) into benches/.venv, then
# runs benches/seed_scale.py (see there for what is measured). Data and
# warehouses go to $TAGLAKE_BENCH_DIR (default
# ~/.cache/taglake-bench/seed-MEMBERS): ~6 GB at 10 M, ~25 GB at 42 M.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-10000000}"
NIGHTS="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release --locked --bin taglake
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
exec benches/.venv/bin/python benches/seed_scale.py \
  --taglake "$CARGO_TARGET_DIR/release/taglake" --members "$MEMBERS" --nights "$NIGHTS" "${@:3}"

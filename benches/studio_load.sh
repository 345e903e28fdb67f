#!/usr/bin/env bash
# The studio's audience builder under a scripted session of edits, with
# DuckDB counting the same audiences, in the same run.
#   benches/studio_load.sh [MEMBERS] [EDITS]
# Defaults: 10,000,000 members, 200 edits. Uses the tagged warehouse
# ~/.cache/taglake-bench/audience-MEMBERS (or tag-MEMBERS-5), building it
# when missing (generate, ingest, tag). Builds taglake and audience_side in
# release mode, installs the pinned peers (benches/requirements.txt) into
# benches/.venv, then runs benches/studio_load.py (see there for what is
# measured). Run it alone: the studio, DuckDB and the client share the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-10000000}"
EDITS="${2:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taglake-release}"
cargo build --release -p taglake --bin taglake -p taglake-benches --bin audience_side
[ -x benches/.venv/bin/python ] || python3 -m venv benches/.venv
benches/.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
cd benches
exec .venv/bin/python studio_load.py --taglake "$CARGO_TARGET_DIR/release/taglake" \
  --side "$CARGO_TARGET_DIR/release/audience_side" --members "$MEMBERS" --edits "$EDITS"

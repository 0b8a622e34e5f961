#!/usr/bin/env bash
# Runs every test: unit tests, cross-process tests with real primaries and secondaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace

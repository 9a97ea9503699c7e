#!/usr/bin/env bash
# Installs convpack with its test dependencies, then runs the Rust and Python
# test suites. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/convpack-target}"

python3 -m pip install -q ".[test]"
cargo test --release -p convpack-core
python3 -m pytest -q

#!/usr/bin/env bash
# The README's test command: installs what the tests need (only what is
# missing), builds and installs convpack (only when its sources changed since
# the last build for this Python), then runs the Rust and Python test suites.
#
#   bash scripts/test.sh                 # fast: skips tests marked `slow`
#   bash scripts/test.sh --all           # everything (what CI runs)
#   bash scripts/test.sh -- -k render    # anything after -- goes to pytest
#
# Environment: PYTHON (default python3) is the interpreter to install into
# and test with. CARGO_TARGET_DIR (default: the repository's target/, where
# `pip install .` builds too) is the one cargo target directory shared by the
# install, the extension build here and `cargo test`: the same release
# profile, so the core's dependencies compile once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

marker=(-m "not slow")
pytest_args=()
while (($#)); do
    case "$1" in
        --all) marker=() ;;
        --) shift; pytest_args+=("$@"); break ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) pytest_args+=("$1") ;;
    esac
    shift
done

started=$SECONDS
step() { printf '\n== [%ds] %s\n' "$((SECONDS - started))" "$*"; }

step "Python: $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
echo "cargo target directory: $CARGO_TARGET_DIR"

# 1. Test dependencies: the base dependencies, the `test` extra and the build
# backend, each checked against what is installed; pip runs only for the
# missing ones.
step "checking the test dependencies (pyproject.toml: dependencies, the test extra, maturin)"
mapfile -t missing < <("$PYTHON" - <<'EOF'
import sys
from importlib import metadata

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: pip's vendored copy
    from pip._vendor import tomli as tomllib
from pip._vendor.packaging.requirements import Requirement

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
wanted = (
    project["project"]["dependencies"]
    + project["project"]["optional-dependencies"]["test"]
    + project["build-system"]["requires"]
)
for text in wanted:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(text)
        continue
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        print(text)
        print(f"  {req.name} {version} does not satisfy {text}", file=sys.stderr)
EOF
)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    "$PYTHON" -m pip install "${missing[@]}"
else
    echo "all installed"
fi

# 2. convpack itself: built with maturin into the shared target directory and
# installed without touching its dependencies, unless this interpreter already
# has a build of exactly these sources (a hash of every file the build reads).
step "building convpack (skipped when the installed build matches the sources)"
stamp_info=$("$PYTHON" - <<'EOF'
import hashlib, os, subprocess, sys

roots = ["Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "rust", "python", "tasks"]
try:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *roots],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
except (OSError, subprocess.CalledProcessError):  # not a git checkout
    files = []
    for root in roots:
        if os.path.isfile(root):
            files.append(root)
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "target")]
            files += [os.path.join(folder, n) for n in names]
digest = hashlib.sha256()
for path in sorted(f for f in files if f and os.path.isfile(f)):
    if path.endswith((".so", ".pyd", ".pyc")):
        continue
    digest.update(path.encode() + b"\0")
    with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
prefix = hashlib.sha256(sys.prefix.encode()).hexdigest()[:16]
print(digest.hexdigest(), prefix)
EOF
)
read -r source_hash prefix_hash <<<"$stamp_info"
stamp="$CARGO_TARGET_DIR/convpack-stamps/$prefix_hash"
installed_ok=0
if [[ -f "$stamp" && "$(cat "$stamp")" == "$source_hash" ]] &&
    "$PYTHON" -c 'from importlib import metadata; metadata.version("convpack")' 2>/dev/null; then
    installed_ok=1
fi
if ((installed_ok)); then
    echo "convpack is installed and up to date (sources unchanged since the last build)"
else
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    # The maturin module may come from a base environment whose script is
    # not in this interpreter's scripts directory: then the one on PATH.
    maturin=("$PYTHON" -m maturin)
    if ! "${maturin[@]}" --version >/dev/null 2>&1 && command -v maturin >/dev/null; then
        maturin=(maturin)
    fi
    echo "maturin build --release (cargo's progress below)"
    # The interpreter as pip names it to maturin (sys.executable): another
    # spelling of it would make pyo3 rebuild instead of reusing pip's build.
    "${maturin[@]}" build --release --out "$wheels" \
        --interpreter "$("$PYTHON" -c 'import sys; print(sys.executable)')"
    echo "installing the wheel (dependencies already checked above)"
    "$PYTHON" -m pip install --no-deps --force-reinstall "$wheels"/*.whl
    mkdir -p "$(dirname "$stamp")"
    echo "$source_hash" >"$stamp"
fi
"$PYTHON" -c 'import convpack; print("testing convpack", convpack.__version__, "from", convpack.__file__)'
# The console script of this interpreter first on PATH (a venv need not be active).
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

# 3. The Rust core's tests, in the same target directory and profile.
step "cargo test --release -p convpack-core"
cargo test --release -p convpack-core

# 4. The Python suite.
if ((${#marker[@]})); then
    step "pytest, skipping tests marked slow (bash scripts/test.sh --all runs them)"
else
    step "pytest, every test"
fi
"$PYTHON" -m pytest -q "${marker[@]}" "${pytest_args[@]}"
step "done"

#!/usr/bin/env bash
# Install vm-bot the way operators do: build the wheel, install it into a clean virtual environment in a
# temporary directory with no source tree beside it, and run `vm-bot db upgrade` and `vm-bot demo` from there.
# The Dockerfile runs exactly these steps (build the wheel, install it in a fresh venv, run from elsewhere).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$root"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/vm_bot-*.whl

# A clean environment and a directory without the sources: only the installed package can answer.
mkdir "$work/run"
cd "$work/run"
run() { env -i PATH="$work/venv/bin:/usr/bin:/bin" HOME="$work/run" LANG=C.UTF-8 "$@"; }
run vm-bot --version
run env DATABASE_URL="sqlite:///$work/run/wheel-check.db" vm-bot db upgrade
run vm-bot demo >/dev/null
echo "wheel check: built, installed and ran db upgrade and demo from $(ls "$work"/dist)"

#!/usr/bin/env bash
# The Python the tests drive the official OpenAI SDK with: .venv (gitignored), made and given
# the `openai` package when missing. Prints the interpreter's path.
# Usage: scripts/ensure-venv.sh
set -euo pipefail

cd "$(dirname "$0")/.."
venv=.venv
if ! "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
  echo "ensure-venv: installing the openai package into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi
echo "$PWD/$venv/bin/python"

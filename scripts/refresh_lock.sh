#!/usr/bin/env bash
# Refresh the dependency locks that CI and the README's test command install with.
#
#   requirements/lock.txt         the newest versions pyproject.toml allows (torch held at $TORCH)
#   requirements/lock-oldest.txt  the same, with the lowest supported transformers (pyproject's floor)
#
# Each lock is frozen from a fresh virtual environment, then the test suite runs against it
# (the whole suite on the newest, tap and model tests on the oldest); commit the new locks
# only when both pass. Usage: bash scripts/refresh_lock.sh   (SKIP_TESTS=1 to freeze only)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.13.0}
floor=$(sed -n 's/.*"transformers>=\([0-9.]*\).*/\1/p' pyproject.toml)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

freeze() {  # venv, lock file, description
  {
    echo "# $3"
    echo "# Made by scripts/refresh_lock.sh on $(date -u +%Y-%m-%d) with Python $("$1/bin/python" -c 'import platform; print(platform.python_version())')."
    "$1/bin/pip" freeze --exclude-editable | sed 's/+cpu$//'
  } >"$2"
}

python3 -m venv "$tmp/newest"
"$tmp/newest/bin/pip" install -q --upgrade "torch==$TORCH" -e ".[test,metaworld]"
freeze "$tmp/newest" requirements/lock.txt "Newest allowed versions; torch held at $TORCH. Install: pip install -c requirements/lock.txt -e \".[test,metaworld]\""

grep -vE '^(#|transformers==|tokenizers==|huggingface[-_]hub==)' requirements/lock.txt >"$tmp/base.txt"
python3 -m venv "$tmp/oldest"
"$tmp/oldest/bin/pip" install -q -c "$tmp/base.txt" "transformers==$floor" -e ".[test]"
freeze "$tmp/oldest" requirements/lock-oldest.txt "Lowest supported transformers ($floor), the rest as requirements/lock.txt."

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  "$tmp/newest/bin/python" -m pytest
  "$tmp/oldest/bin/python" -m pytest tests/tap tests/models
fi
echo "wrote requirements/lock.txt and requirements/lock-oldest.txt"

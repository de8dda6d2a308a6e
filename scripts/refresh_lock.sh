#!/usr/bin/env bash
# Refresh the dependency locks that CI and the README's test command install with.
#
#   requirements/lock.txt         the newest versions pyproject.toml allows (torch held at $TORCH)
#   requirements/lock-oldest.txt  the same, with the lowest supported transformers (pyproject's floor)
#
# Each lock is frozen from a fresh virtual environment, then the test suite runs against it
# (the whole suite on the newest, tap and model tests on the oldest); commit the new locks
# only when both pass. Usage: bash scripts/refresh_lock.sh
#
#   SKIP_TESTS=1    freeze only
#   NEWEST_TORCH=1  also install, in a third venv, the newest torch that pyproject.toml's range
#                   allows (the rest as the new lock.txt) and run tests/tap and tests/models there.
#                   From the default index that is the CUDA build: several GB of download. A pip
#                   configured with a constraint file that caps torch (`pip config list`) is told
#                   PIP_CONSTRAINT=/dev/null for this venv only; the torch tested is printed.
#   KEEP_VENVS=1    keep the venvs (their folder is printed) to rerun a failing test in them
#
# Every test stage runs even when an earlier one failed; the script exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.13.0}
floor=$(sed -n 's/.*"transformers>=\([0-9.]*\).*/\1/p' pyproject.toml)
torch_range=$(sed -n 's/^ *"\(torch[<>=!~][^"]*\)".*/\1/p' pyproject.toml)
tmp=$(mktemp -d)
if [ "${KEEP_VENVS:-0}" = 1 ]; then
  echo "venvs kept in $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi

freeze() {  # venv, lock file, description
  {
    echo "# $3"
    echo "# Made by scripts/refresh_lock.sh on $(date -u +%Y-%m-%d) with Python $("$1/bin/python" -c 'import platform; print(platform.python_version())')."
    "$1/bin/pip" freeze --exclude-editable | sed 's/+cpu$//'
  } >"$2"
}

torch_of() { "$1/bin/python" -c 'import torch; print(torch.__version__)'; }

python3 -m venv "$tmp/newest"
"$tmp/newest/bin/pip" install -q --upgrade "torch==$TORCH" -e ".[test,metaworld]"
freeze "$tmp/newest" requirements/lock.txt "Newest allowed versions; torch held at $TORCH. Install: pip install -c requirements/lock.txt -e \".[test,metaworld]\""

grep -vE '^(#|transformers==|tokenizers==|huggingface[-_]hub==)' requirements/lock.txt >"$tmp/base.txt"
python3 -m venv "$tmp/oldest"
"$tmp/oldest/bin/pip" install -q -c "$tmp/base.txt" "transformers==$floor" -e ".[test]"
freeze "$tmp/oldest" requirements/lock-oldest.txt "Lowest supported transformers ($floor), the rest as requirements/lock.txt."
echo "wrote requirements/lock.txt and requirements/lock-oldest.txt"

[ "${SKIP_TESTS:-0}" = 1 ] && exit 0
failed=()
"$tmp/newest/bin/python" -m pytest || failed+=("whole suite, lock.txt (torch $(torch_of "$tmp/newest"))")
"$tmp/oldest/bin/python" -m pytest tests/tap tests/models || failed+=("tap/models, lock-oldest.txt")

newest_torch() {  # the newest torch pyproject.toml allows, the rest as lock.txt; tests/tap and tests/models
  local venv=$tmp/torch start=$SECONDS newest
  grep -vE '^(#|torch==)' requirements/lock.txt >"$tmp/no-torch.txt"
  python3 -m venv "$venv"
  # first the newest torch alone, so that the lock's other pins cannot make pip settle for an older one
  PIP_CONSTRAINT=/dev/null "$venv/bin/pip" install -q "$torch_range" || return 1
  newest=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("torch"))')
  PIP_CONSTRAINT=/dev/null "$venv/bin/pip" install -q -c "$tmp/no-torch.txt" "torch==${newest%%+*}" -e ".[test]" \
    || return 1
  echo "torch $(torch_of "$venv") (newest allowed by $torch_range) installed in $((SECONDS - start)) s," \
    "venv $(du -sh "$venv" | cut -f1); running tests/tap tests/models on it"
  "$venv/bin/python" -m pytest tests/tap tests/models || return 1
  echo "tested torch: $(torch_of "$venv")"
}
[ "${NEWEST_TORCH:-0}" = 1 ] && { newest_torch || failed+=("tap/models (or the install), newest torch"); }

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  echo "do not commit the new locks"
  exit 1
fi
echo "all test stages passed; commit requirements/lock.txt and requirements/lock-oldest.txt"

#!/usr/bin/env bash
# LeRobot's patched transformers for pi0 / pi0.5, built offline-friendly into a directory of its own:
# transformers 4.53.2 (and a tokenizers it accepts) installed with --target, then openpi's
# transformers_replace files copied over it (AdaRMS Gemma, precision control, a KV cache used without
# being updated; its siglip/check.py is what LeRobot's pi0 / pi0.5 call). Nothing else is touched: the
# interop scripts put DIR first on PYTHONPATH of a child process (--pi-transformers DIR).
#
#   bash scripts/make_pi_transformers.sh OPENPI_CHECKOUT OUT_DIR [PYTHON]
#   /tmp/lerobot_venv/bin/python scripts/lerobot_policies_interop.py --pi-transformers OUT_DIR
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OPENPI_CHECKOUT OUT_DIR [PYTHON]   (OPENPI_CHECKOUT: a clone of Physical-Intelligence/openpi)" >&2
  exit 2
fi
openpi=$1 out=$2 python=${3:-python3}
replace=$openpi/src/openpi/models_pytorch/transformers_replace
if [ ! -f "$replace/models/siglip/check.py" ]; then
  echo "error: $replace/models/siglip/check.py not found; pass the root of an openpi checkout" >&2
  exit 2
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "error: $out exists and is not empty; pass a new directory" >&2
  exit 2
fi
"$python" -m pip install --quiet --no-deps --target "$out" "transformers==4.53.2" "tokenizers>=0.21,<0.22"
cp -r "$replace"/. "$out/transformers/"
PYTHONPATH=$out "$python" -c "
from transformers.models.siglip import check
import transformers
assert check.check_whether_transformers_replace_is_installed_correctly(), transformers.__version__
print(f'patched transformers {transformers.__version__} in $out')
"

"""``BACConfig``: which caching mode to apply and with which schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._calibration import Calibration

MODES = ("original", "uniform", "optimal")
METRICS = ("cosine", "l1", "l2", "mse")


@dataclass
class BACConfig:
    """Block-wise adaptive caching settings.

    - ``original``: no caching (nothing is wrapped).
    - ``uniform``: every branch recomputes every ``every`` steps, or at ``num_updates`` evenly
      spread steps; ``num_steps`` defaults to the policy's ``num_inference_steps``.
    - ``optimal``: per-branch update steps from ``calibration`` (a :class:`Calibration` or the
      path of its JSON). ``num_updates`` / ``n_bu`` / ``metric``, when given, recompute the
      schedule from the calibrated matrices instead of using the stored one. ``num_steps`` lets a
      schedule calibrated for another step count than the policy's default run (e.g. calibrated on
      DDIM-50 runs of a DDPM-100 policy: ``num_steps=50``, then ``predict_action(...,
      sampler="ddim", num_inference_steps=50)``).

    ``root``: path of the submodule whose blocks are cached (``""``: every registered block of the
    policy; ``None``: the policy's registered profile, e.g. ``"expert"`` for ``TinyVLA``, whose
    PaliGemma prefix runs once per chunk and is never cached).

    ``reset_method`` names the policy method at whose start the cache state resets (``"auto"``: the
    profile's loop method, ``predict_action`` or ``TinyVLA.sample_actions``; ``None``: call
    :func:`reset_state` yourself before each denoising loop).

    ``fuse_skipped_stacks``: at a step where every branch of a pre-norm ``nn.TransformerEncoder`` /
    ``nn.TransformerDecoder``, or of a transformers Gemma / Gemma2 / Gemma3 / Llama / Qwen2 model
    called with ``inputs_embeds``, reuses its cache, add the cached outputs in one pass instead of
    running each layer (bit-identical results, less Python per skipped step; ``False`` runs the layers).
    """

    mode: str = "optimal"
    num_steps: int | None = None
    every: int | None = None
    num_updates: int | None = None
    n_bu: int | None = None
    metric: str | None = None
    calibration: Calibration | str | Path | None = None
    reset_method: str | None = "auto"
    fuse_skipped_stacks: bool = True
    root: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"BACConfig.mode={self.mode!r}: expected one of {MODES}.")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"BACConfig.metric={self.metric!r}: expected one of {METRICS}.")
        for name in ("num_steps", "every", "num_updates"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"BACConfig.{name}={v!r}: expected a positive int or None.")
        if self.root is not None and not isinstance(self.root, str):
            raise ValueError(f"BACConfig.root={self.root!r}: expected a submodule path such as 'expert', or None.")
        if self.n_bu is not None and self.n_bu < 0:
            raise ValueError(f"BACConfig.n_bu={self.n_bu}: expected >= 0 or None.")
        if self.mode == "uniform" and (self.every is None) == (self.num_updates is None):
            raise ValueError(
                f"BACConfig(mode='uniform'): give exactly one of every= or num_updates= "
                f"(got every={self.every}, num_updates={self.num_updates})."
            )
        if self.mode == "optimal" and self.calibration is None:
            raise ValueError(
                "BACConfig(mode='optimal') needs calibration= (a Calibration from accel.calibrate or the "
                "path of its JSON); run `policylens accel calibrate` to make one."
            )

"""Configuration of the reference diffusion policy (sizes, diffusion steps, normaliser bounds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

POLICY_TYPE = "tiny_diffusion_policy"
SUITES = (None, "pybullet", "metaworld")


@dataclass
class DiffusionPolicyConfig:
    """Sizes of :class:`TinyDiffusionPolicy` (Chi et al.'s TransformerForDiffusion layout).

    ``n_cond_layers == 0`` gives the MLP condition encoder of the original;
    ``> 0`` an ``nn.TransformerEncoder`` of that depth.
    ``suite`` / ``task``: the simulator and task the policy was trained on (``"metaworld"``,
    ``"pick-place-v3"``), so that an evaluation can refuse another task; ``None`` (the default,
    and every checkpoint written before they existed) records nothing and is left out of
    ``to_dict``.
    """

    obs_dim: int = 10
    action_dim: int = 7
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    n_layer: int = 6
    n_head: int = 4
    n_emb: int = 128
    n_cond_layers: int = 0
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.1
    causal_attn: bool = True
    num_train_timesteps: int = 100
    num_inference_steps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    suite: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "n_obs_steps", "n_action_steps", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DiffusionPolicyConfig.{name}={value!r}: expected a positive int.")
        if self.n_emb % self.n_head != 0:
            raise ValueError(
                f"DiffusionPolicyConfig.n_emb={self.n_emb} is not divisible by n_head={self.n_head}; "
                "pick n_emb as a multiple of n_head."
            )
        if self.n_cond_layers < 0:
            raise ValueError(f"DiffusionPolicyConfig.n_cond_layers={self.n_cond_layers}: expected >= 0.")
        if self.n_obs_steps + self.n_action_steps - 1 > self.horizon:
            raise ValueError(
                f"DiffusionPolicyConfig: n_obs_steps ({self.n_obs_steps}) + n_action_steps "
                f"({self.n_action_steps}) - 1 exceeds horizon ({self.horizon}); lower n_action_steps."
            )
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"DiffusionPolicyConfig.num_inference_steps={self.num_inference_steps}: expected 1.."
                f"num_train_timesteps ({self.num_train_timesteps})."
            )
        if self.beta_schedule not in ("squaredcos_cap_v2", "linear"):
            raise ValueError(
                f"DiffusionPolicyConfig.beta_schedule={self.beta_schedule!r}: expected 'squaredcos_cap_v2' or 'linear'."
            )
        for name in ("p_drop_emb", "p_drop_attn"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"DiffusionPolicyConfig.{name}={getattr(self, name)}: expected in [0, 1).")
        if self.suite not in SUITES:
            raise ValueError(f"DiffusionPolicyConfig.suite={self.suite!r}: expected one of {SUITES}.")
        if self.task is not None and not (isinstance(self.task, str) and self.task):
            raise ValueError(f"DiffusionPolicyConfig.task={self.task!r}: expected a task name or None.")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("suite", "task"):  # absent rather than null: older configs stay byte-identical
            if data[name] is None:
                del data[name]
        return {"type": POLICY_TYPE, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionPolicyConfig:
        data = dict(data)
        kind = data.pop("type", POLICY_TYPE)
        if kind != POLICY_TYPE:
            raise ValueError(f"config 'type' is {kind!r}; expected {POLICY_TYPE!r} for a TinyDiffusionPolicy.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; known fields: {sorted(known)}.")
        return cls(**data)

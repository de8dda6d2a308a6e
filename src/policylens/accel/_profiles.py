"""How accel drives a policy's denoising loop: which submodule holds the cached blocks, which method
runs one loop (the cache resets at its start), where the default step count lives and what the
step keyword is called, what runs once per call before the loop, and which actions an agent executes.

Profiles are registered by the policy's qualified class name (no import of the policy class), as a
profile or as a function of the policy instance that returns one (a wrapper class around several
models: ``LeRobotTeacher``); a policy with none gets the diffusion-policy defaults (``predict_action``,
``num_inference_steps``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ._registry import BlockSpec, qualified_name

__all__ = ["PolicyProfile", "policy_profile", "register_policy"]


@dataclass(frozen=True)
class PolicyProfile:
    """What accel needs to know to cache one policy class.

    - ``root``: path of the submodule whose registered blocks are cached (``""``: the whole policy).
      A VLA's prefix runs once per action chunk and must stay outside it.
    - ``method``: the policy method that runs one denoising loop; the cache state resets at its start.
    - ``steps``: dotted attribute path of the default step count; ``steps_kwarg``: the method's keyword
      for another step count.
    - ``prefix``: a method the loop calls once per call before its steps (timed apart by ``evaluate_mode``).
    - ``executed``: the slice of a predicted chunk (along its time axis) that an agent runs.
    - ``shared_attention_steps``: the loop crops a key/value cache shared by the expert's layers back
      to the prefix by one layer's length after each step (transformers' pi0 / pi0.5), so every
      attention branch must update at the same steps.
    - ``calls``: ``"layers"`` (the model calls each layer module) or ``"pieces"`` (it calls the layers'
      pieces itself, as LeRobot's SmolVLA does; the registered layer type's ``pieces`` spec is used).
    - ``block_spec``: a spec used for every registered layer under ``root`` instead of its type's.
    - ``attention_interface``: dotted path (from the policy) of the method that returns the attention
      function the expert's pieces are handed to, called ``(mask, batch, head_dim, q, k, v)`` with ``q``
      ``(B, T, H, d)`` (SmolVLA's ``get_attention_interface``); on a skipped attention step the call
      returns zeros ``(B, T, H*d)`` without computing.
    - ``step``: dotted path of a module whose ``forward`` calls are timed; those for which
      ``is_step(args, kwargs)`` holds are the expert's flow steps (``evaluate_mode`` then reports
      ``expert_ms`` as their sum per chunk and ``prefix_ms`` as the rest of the call).
    """

    root: str = ""
    method: str = "predict_action"
    steps: str = "num_inference_steps"
    steps_kwarg: str = "num_inference_steps"
    prefix: str | None = None
    executed: Callable[[nn.Module], slice] | None = None
    shared_attention_steps: bool = False
    calls: str = "layers"
    block_spec: BlockSpec | None = None
    attention_interface: str | None = None
    step: str | None = None
    is_step: Callable[[tuple, dict], bool] | None = None

    def __post_init__(self) -> None:
        if self.calls not in ("layers", "pieces"):
            raise ValueError(f"PolicyProfile.calls={self.calls!r}: expected 'layers' or 'pieces'.")


_PROFILES: dict[str, PolicyProfile | Callable[[nn.Module], PolicyProfile]] = {}
DEFAULT = PolicyProfile()


def register_policy(name: str, profile: PolicyProfile | Callable[[nn.Module], PolicyProfile]) -> None:
    """Register ``profile`` (or a function of the policy returning one) for the policy class with
    qualified name ``name`` (``"pkg.module.Class"``)."""
    if "." not in name:
        raise ValueError(f"register_policy: name={name!r}; give the qualified class name 'pkg.module.Class'.")
    _PROFILES[name] = profile


def policy_profile(policy: nn.Module) -> PolicyProfile:
    """The profile of ``policy``'s class (or a base class), else the diffusion-policy defaults."""
    for cls in type(policy).__mro__:
        profile = _PROFILES.get(qualified_name(cls))
        if profile is not None:
            return profile if isinstance(profile, PolicyProfile) else profile(policy)
    return DEFAULT


def default_steps(policy: nn.Module, profile: PolicyProfile | None = None) -> int | None:
    """The step count ``policy`` runs when not told otherwise, or None when it has no int there."""
    value: object = policy
    for part in (profile or policy_profile(policy)).steps.split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _diffusion_executed(policy: nn.Module) -> slice:
    c = policy.config  # the agent runs n_action_steps actions from the newest observation's step on
    return slice(c.n_obs_steps - 1, c.n_obs_steps - 1 + c.n_action_steps)


def _vla_executed(policy: nn.Module) -> slice:
    return slice(0, max(1, policy.config.chunk_size // 2))  # policylens.sim.vla_agent's default


register_policy("policylens.models.diffusion._policy.TinyDiffusionPolicy", PolicyProfile(executed=_diffusion_executed))
register_policy(
    "policylens.models._tiny_vla.TinyVLA",
    PolicyProfile(
        root="expert",
        method="sample_actions",
        steps="config.flow_steps",
        steps_kwarg="steps",
        prefix="run_prefix",
        executed=_vla_executed,
    ),
)
_PI = "transformers.models.{0}.modeling_{0}.{1}ForConditionalGeneration"
for _variant, _cls in (("pi0", "PI0"), ("pi05", "PI05")):
    register_policy(
        _PI.format(_variant, _cls),
        PolicyProfile(
            root="model.dit",
            method="sample_actions",
            steps="config.num_inference_steps",
            steps_kwarg="num_steps",
            shared_attention_steps=True,
        ),
    )
register_policy(
    "policylens.models._hf_pi_policy.NativePIPolicy",
    PolicyProfile(
        root="model.model.dit",
        method="sample_actions",
        steps="config.flow_steps",
        steps_kwarg="steps",
        executed=_vla_executed,
        shared_attention_steps=True,
    ),
)

"""Profiles of LeRobot 0.4.4's pi0, pi0.5 and SmolVLA behind policylens' ``LeRobotTeacher``
(``load_model(DIR)`` of a LeRobot checkpoint), registered by class name: LeRobot is never imported.

What is cached, per variant (paths from the teacher):

- SmolVLA: the expert ``policy.model.vlm_with_expert.lm_expert`` (Llama layers). LeRobot calls their
  pieces (``calls="pieces"``): the attention branch is what ``o_proj`` returns, the MLP branch what
  ``mlp`` returns, and a skipped attention also skips ``q/k/v_proj`` (in cross-attention layers that
  is the re-projection of the prefix's keys / values) and the attention function
  (``get_attention_interface``), see ``_pieces``.
- pi0 / pi0.5: the expert ``policy.model.paligemma_with_expert.gemma_expert.model``. Each denoising
  step calls that ``GemmaModel`` whole, so its layers are called as modules; the branches are the
  ``self_attn`` / ``mlp`` outputs with no norm gates, because LeRobot's patched Gemma (pi0.5's
  adaptive norms) returns ``(normed, gate)`` from its norms and multiplies the residual by a gate
  that changes every step. A whole skipped expert runs as one sum only where its norms are plain.

The loop is ``LeRobotTeacher.sample_actions`` (the state resets at its start, one action chunk), the
step count is LeRobot's config (``num_steps`` for SmolVLA, ``num_inference_steps`` for pi), the
executed part is the config's ``n_action_steps``, and the flow steps are timed as the calls of the
``*_with_expert`` module whose ``inputs_embeds`` is ``[None, suffix]`` (the prefix pass is
``[prefix, None]``), so ``prefix_ms`` is the rest: vision, the LLM's prefix pass, suffix embeddings,
the action head and the Euler updates.
"""

from __future__ import annotations

from torch import nn

from ._profiles import PolicyProfile, register_policy
from ._registry import BlockSpec, BranchSpec

__all__: list[str] = []

TEACHER = "policylens.models._lerobot_teacher.LeRobotTeacher"


def _plain_norms(layer: nn.Module) -> bool:
    norm = layer.input_layernorm  # the patched adaptive RMSNorm has a conditioning projection
    return getattr(norm, "cond_dim", None) is None and not hasattr(norm, "dense")


_PI_LAYER = BlockSpec(
    (BranchSpec("self_attn", "attn", "self_attn"), BranchSpec("mlp", "ffn", "mlp")), residual_sum=_plain_norms
)


def is_suffix_step(args: tuple, kwargs: dict) -> bool:
    """Whether a ``*_with_expert`` forward call runs the expert alone: ``inputs_embeds == [None, suffix]``."""
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        embeds = next((a for a in args if isinstance(a, list | tuple)), None)
    return isinstance(embeds, list | tuple) and len(embeds) == 2 and embeds[0] is None and embeds[1] is not None


def _executed(teacher: nn.Module) -> slice:
    cfg = teacher.policy.config
    return slice(0, max(1, int(getattr(cfg, "n_action_steps", None) or cfg.chunk_size)))


def teacher_profile(teacher: nn.Module) -> PolicyProfile:
    """The profile of a ``LeRobotTeacher`` for its variant (``smolvla``, ``pi0``, ``pi05``)."""
    common = {"method": "sample_actions", "steps_kwarg": "steps", "executed": _executed, "is_step": is_suffix_step}
    if teacher.variant == "smolvla":
        core = "policy.model.vlm_with_expert"
        return PolicyProfile(
            root=f"{core}.lm_expert",
            steps="policy.config.num_steps",
            calls="pieces",
            attention_interface=f"{core}.get_attention_interface",
            step=core,
            **common,
        )
    core = "policy.model.paligemma_with_expert"
    return PolicyProfile(
        root=f"{core}.gemma_expert.model",
        steps="policy.config.num_inference_steps",
        block_spec=_PI_LAYER,
        step=core,
        **common,
    )


register_policy(TEACHER, teacher_profile)

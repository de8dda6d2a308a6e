"""Runtime caching: per-branch forward wrappers driven by static per-step update masks.

Each branch's output submodule gets an instance-level ``forward`` that, while a schedule is
active and the module is in eval mode, counts its calls since the last reset and either
recomputes (mask True, result cached) or returns the cached output (mask False). The hot path
reads only Python ints and bools: no ``.item()``, no device sync. A gate (a submodule that only
feeds the branch) returns, at a skipped step, a placeholder shaped like its last real output: a 0-d
tensor, or a tuple of them (``None`` kept) for an attention that returns ``(output, weights)``.

Only the blocks under the policy's ``root`` are wrapped (a VLA's action expert, not its prefix), and
the state resets at the start of the policy's loop method (``predict_action``, ``sample_actions``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ._config import BACConfig
from ._pieces import SkipFlag, shaped_gate_forward, skipping_attention_interface
from ._profiles import policy_profile
from ._registry import block_spec, discover_branches, submodule, used_spec
from ._resolve import resolve_schedule
from ._schedule import steps_to_mask
from ._stack import fusable_stacks


class _BranchState:
    __slots__ = ("cache", "mask", "name", "num_steps", "step")

    def __init__(self, name: str, mask: list[bool]) -> None:
        self.name, self.mask, self.num_steps = name, mask, len(mask)
        self.step, self.cache = 0, None


@dataclass
class _CacheState:
    config: BACConfig
    num_steps: int
    schedule: dict[str, list[int]]
    branches: list[_BranchState] = field(default_factory=list)
    undo: list[Any] = field(default_factory=list)
    flag: SkipFlag | None = None  # a skipped attention gate -> the model's next attention call


_STATES: weakref.WeakKeyDictionary[nn.Module, _CacheState] = weakref.WeakKeyDictionary()


def _too_many(st: _BranchState) -> RuntimeError:
    return RuntimeError(
        f"BAC: branch {st.name!r} was called {st.num_steps + 1} times since the last reset, but the "
        f"schedule was made for {st.num_steps} denoising steps. Run {st.num_steps} steps per call "
        "(num_inference_steps= / steps=), or calibrate / configure a schedule for your step count; call "
        "reset_state(policy) before each denoising loop if the policy's loop method is not reset_method."
    )


def _output_forward(module: nn.Module, orig, st: _BranchState, copy: bool = False):
    """The branch output's forward: recompute and keep it at update steps, hand out the cache
    otherwise. ``copy``: keep and hand out copies (a model that adds the residual in place on the
    branch output, as LeRobot's pieces do, would otherwise write into the cache)."""

    @functools.wraps(orig)
    def forward(*args, **kwargs):
        if module.training:
            return orig(*args, **kwargs)
        s = st.step
        if s >= st.num_steps:
            raise _too_many(st)
        st.step = s + 1
        if st.mask[s]:
            out = orig(*args, **kwargs)
            st.cache = out.clone() if copy else out
            return out
        return st.cache.clone() if copy else st.cache

    return forward


def _placeholder(out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(_placeholder(o) for o in out)
    return out.new_zeros(()) if hasattr(out, "new_zeros") else out


def _gate_forward(module: nn.Module, orig, st: _BranchState):
    held: list[Any] = []  # the placeholder, made from the first real output (step 0 always computes)

    @functools.wraps(orig)
    def forward(*args, **kwargs):
        s = st.step
        if module.training or s >= st.num_steps or st.mask[s] or not held:
            out = orig(*args, **kwargs)
            if not held:
                held.append(_placeholder(out))
            return out
        return held[0]  # placeholder: the branch output comes from the cache

    return forward


def _branch_forward(br, st: _BranchState):
    return _output_forward(br.output, br.output.forward, st, copy=br.spec is not None and br.spec.copy)


def _gate_forwards(br, st: _BranchState, flag: SkipFlag | None) -> list:
    if br.spec is None or not br.spec.shaped:
        return [_gate_forward(g, g.forward, st) for g in br.gates]
    return [
        shaped_gate_forward(g, g.forward, st, flag if path == br.spec.attention_gate else None)
        for g, path in zip(br.gates, br.spec.gates, strict=True)
    ]


def _override_forward(module: nn.Module, new) -> Any:
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = new

    def undo() -> None:
        if had:
            module.forward = old
        else:
            del module.forward

    return undo


def _noop_pre_hook(module: nn.Module, args: Any) -> None:
    return None


def cache_root(policy: nn.Module, config: BACConfig) -> str:
    """The submodule path whose blocks ``config`` caches: ``config.root``, else the policy's profile's."""
    return policy_profile(policy).root if config.root is None else config.root


def _check_attention_steps(policy: nn.Module, branches: list, schedule: dict[str, list[int]]) -> None:
    if not policy_profile(policy).shared_attention_steps:
        return
    steps = {b.name: schedule[b.name] for b in branches if b.kind == "attn"}
    if len({tuple(v) for v in steps.values()}) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in list(steps.items())[:3])
        raise ValueError(
            f"apply_cache: {type(policy).__name__}'s flow loop crops the key/value cache its expert layers share "
            "back to the prefix by the first layer's length after each step, so every expert attention must "
            f"update at the same steps; this schedule staggers them ({shown}, ...). Use BACConfig(mode='uniform', "
            "...), or a schedule that gives every attention branch the same update steps."
        )


def apply_cache(policy: nn.Module, config: BACConfig) -> nn.Module:
    """Wrap every registered block's branches under ``policy``'s cache root according to ``config``;
    returns ``policy``."""
    if policy in _STATES:
        raise RuntimeError("apply_cache: BAC is already applied to this policy; call remove_cache(policy) first.")
    root = cache_root(policy, config)
    branches = discover_branches(policy, root)
    if not branches and config.mode != "original":
        where = f"{type(policy).__name__}" + (f" under root={root!r}" if root else "")
        raise ValueError(
            f"apply_cache: no registered transformer blocks found in {where}; register custom "
            "block types with accel.register_block(MyBlock, [BranchSpec(...)])."
        )
    num_steps, schedule = resolve_schedule(policy, branches, config)
    _check_attention_steps(policy, branches, schedule)
    state = _CacheState(config=config, num_steps=num_steps, schedule=schedule)
    _STATES[policy] = state
    if config.mode == "original":
        return policy
    profile = policy_profile(policy)
    if profile.attention_interface is not None and any(b.spec and b.spec.attention_gate for b in branches):
        state.flag = SkipFlag()
        owner, _, name = profile.attention_interface.rpartition(".")
        module = submodule(policy, owner)
        state.undo.append(
            _override_forward_attr(module, name, skipping_attention_interface(getattr(module, name), state.flag))
        )
    blocks_seen: set[int] = set()
    states_by_block: dict[int, list[_BranchState]] = {}
    for br in branches:
        st = _BranchState(br.name, steps_to_mask(schedule[br.name], num_steps))
        state.branches.append(st)
        states_by_block.setdefault(id(br.block), []).append(st)
        state.undo.append(_override_forward(br.output, _branch_forward(br, st)))
        for g, forward in zip(br.gates, _gate_forwards(br, st, state.flag), strict=True):
            state.undo.append(_override_forward(g, forward))
        if id(br.block) not in blocks_seen:
            blocks_seen.add(id(br.block))
            spec = block_spec(br.block)
            if spec is not None and spec.disable_fast_path:
                # torch's fused encoder-layer kernel skips submodules unless a hook is attached.
                state.undo.append(br.block.register_forward_pre_hook(_noop_pre_hook).remove)
    if config.fuse_skipped_stacks:
        used = {id(b.block): used_spec(b.block, b.name, profile.calls, profile.block_spec) for b in branches}
        for stack, make_forward, states in fusable_stacks(submodule(policy, root), states_by_block, used):
            state.undo.append(_override_forward(stack, make_forward(stack, stack.forward, states)))
    method = profile.method if config.reset_method == "auto" else config.reset_method
    if method is not None and callable(getattr(policy, method, None)):
        kwarg = profile.steps_kwarg if method == profile.method else "num_inference_steps"
        state.undo.append(_override_forward_attr(policy, method, _with_reset(policy, method, kwarg, num_steps)))
    return policy


def _with_reset(policy: nn.Module, method: str, kwarg: str, num_steps: int):
    """``policy.<method>`` that resets the cache state first and refuses another step count."""
    orig = getattr(policy, method)
    try:
        signature = inspect.signature(orig)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(orig)
    def with_reset(*args, **kwargs):
        steps = kwargs.get(kwarg)
        if steps is None and args and signature is not None:
            try:
                steps = signature.bind_partial(*args, **kwargs).arguments.get(kwarg)
            except TypeError:  # the call itself is wrong: let the method say so
                steps = None
        if steps is not None and steps != num_steps:
            raise ValueError(
                f"{method}: {kwarg}={steps}, but the BAC schedule was made for {num_steps} "
                "steps; pass the matching step count or apply a schedule made for this one."
            )
        reset_state(policy)
        return orig(*args, **kwargs)

    return with_reset


def _override_forward_attr(module: nn.Module, attr: str, new) -> Any:
    had = attr in module.__dict__
    old = module.__dict__.get(attr)
    object.__setattr__(module, attr, new)

    def undo() -> None:
        if had:
            object.__setattr__(module, attr, old)
        else:
            object.__delattr__(module, attr)

    return undo


def remove_cache(policy: nn.Module) -> nn.Module:
    """Undo :func:`apply_cache`: restores every wrapped forward and hook; weights are never touched."""
    state = _STATES.pop(policy, None)
    if state is None:
        return policy
    for undo in reversed(state.undo):
        undo()
    return policy


def reset_state(policy: nn.Module) -> None:
    """Start a new denoising loop: step counters to 0, cached outputs dropped."""
    state = _STATES.get(policy)
    if state is None:
        return
    for st in state.branches:
        st.step, st.cache = 0, None
    if state.flag is not None:
        state.flag.armed = False


@contextlib.contextmanager
def cache_context(policy: nn.Module, config: BACConfig) -> Iterator[nn.Module]:
    """``with cache_context(policy, config): policy.predict_action(obs)`` — removed on exit."""
    apply_cache(policy, config)
    try:
        yield policy
    finally:
        remove_cache(policy)


def cache_info(policy: nn.Module) -> dict[str, Any]:
    """Mode, step count, per-branch update steps and the fraction of branch evaluations skipped."""
    state = _STATES.get(policy)
    if state is None:
        return {"mode": None}
    total = sum(len(v) for v in state.schedule.values())
    n = len(state.schedule) * state.num_steps
    return {
        "mode": state.config.mode,
        "num_steps": state.num_steps,
        "schedule": state.schedule,
        "skipped_fraction": 0.0 if state.config.mode == "original" or n == 0 else 1.0 - total / n,
    }

"""Block registry: which module types are transformer blocks and where their branches live.

A *branch* is one residual summand of a block (self-attention, cross-attention, FFN). It is
named by the submodule whose output equals what the block adds to the residual stream
(``output``), plus submodules that run only to feed it (``gates``, skipped with it).
Dispatch is a table lookup on the module's type (walking its MRO), never an isinstance ladder.
A type is registered either as a class or by its qualified name (``"pkg.module.Class"``): the
name form lets accel know ``transformers`` layers without importing their modeling files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

BRANCH_KINDS = ("attn", "cross_attn", "ffn")


@dataclass(frozen=True)
class BranchSpec:
    """One cacheable branch of a block.

    ``output`` is the submodule path (relative to the block; ``""`` = the block itself) whose
    return value is the branch output; ``gates`` are submodule paths called earlier in the same
    branch that are skipped too (they return a placeholder the block never reads).

    For layers whose pieces the model calls itself (LeRobot's SmolVLA / pi0 code): ``shaped`` gates
    return zeros shaped like their real output (a zero-stride view: the caller reshapes them);
    ``copy`` keeps the cache apart from what the caller gets (LeRobot adds the residual in place,
    ``out += hidden``); ``attention_gate`` names the gate (``self_attn.q_proj``) whose skipped call
    means the model's next attention-function call belongs to this skipped branch (see
    ``PolicyProfile.attention_interface``).
    """

    name: str
    kind: str
    output: str
    gates: tuple[str, ...] = ()
    shaped: bool = False
    copy: bool = False
    attention_gate: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BRANCH_KINDS:
            raise ValueError(f"BranchSpec.kind={self.kind!r}: expected one of {BRANCH_KINDS}.")
        if self.attention_gate is not None and self.attention_gate not in self.gates:
            raise ValueError(
                f"BranchSpec.attention_gate={self.attention_gate!r} is not one of its gates {self.gates}; "
                "list it in gates too."
            )


@dataclass(frozen=True)
class BlockSpec:
    """The branches of a block type; ``disable_fast_path`` marks layers whose eval forward may bypass
    their submodules (torch's fused encoder-layer kernel) unless a forward pre-hook is present.

    ``residual_sum`` (a bool, or a predicate on the layer) says that in eval the layer returns its
    input plus its branch outputs, added one by one in ``branches`` order (the first element where a
    branch returns a tuple): the condition for running a whole skipped stack as those additions.

    ``pieces``: the spec to use where the model never calls the layer module but its pieces
    (``q/k/v_proj``, ``o_proj``, ``mlp``) one by one (a policy profile with ``calls="pieces"``).
    """

    branches: tuple[BranchSpec, ...]
    disable_fast_path: bool = False
    residual_sum: bool | Callable[[nn.Module], bool] = False
    pieces: BlockSpec | None = None

    def sums_residual(self, layer: nn.Module) -> bool:
        rule = self.residual_sum
        return bool(rule(layer) if callable(rule) else rule)


@dataclass(frozen=True)
class Branch:
    """A discovered branch: ``name`` = ``"{block path}.{branch name}"``; ``layer`` = block order."""

    name: str
    kind: str
    layer: int
    block: nn.Module = field(compare=False, repr=False)
    output: nn.Module = field(compare=False, repr=False)
    gates: tuple[nn.Module, ...] = field(default=(), compare=False, repr=False)
    spec: BranchSpec | None = field(default=None, compare=False, repr=False)


_REGISTRY: dict[type, BlockSpec] = {}
_BY_NAME: dict[str, BlockSpec] = {}  # "module.QualName" -> spec, for classes accel does not import


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_block(block_type: type | str, spec: BlockSpec | list[BranchSpec] | tuple[BranchSpec, ...]) -> None:
    """Register ``block_type`` (a ``nn.Module`` subclass, or its qualified name ``"pkg.module.Class"``)
    so BAC discovers and caches its branches."""
    named = isinstance(block_type, str)
    if not named and not (isinstance(block_type, type) and issubclass(block_type, nn.Module)):
        raise TypeError(f"register_block: block_type={block_type!r} is not an nn.Module subclass or its name.")
    if named and "." not in block_type:
        raise ValueError(f"register_block: block_type={block_type!r}; give the qualified name 'pkg.module.Class'.")
    if not isinstance(spec, BlockSpec):
        spec = BlockSpec(tuple(spec))
    if not spec.branches:
        raise ValueError(f"register_block({block_type}): spec has no branches; give at least one.")
    if named:
        _BY_NAME[block_type] = spec
    else:
        _REGISTRY[block_type] = spec


def unregister_block(block_type: type | str) -> None:
    if isinstance(block_type, str):
        _BY_NAME.pop(block_type, None)
    else:
        _REGISTRY.pop(block_type, None)


def list_blocks() -> list[str]:
    """Qualified names of the registered block types."""
    return sorted({*(qualified_name(t) for t in _REGISTRY), *_BY_NAME})


def block_spec(module: nn.Module) -> BlockSpec | None:
    for cls in type(module).__mro__:
        spec = _REGISTRY.get(cls) or _BY_NAME.get(qualified_name(cls))
        if spec is not None:
            return spec
    return None


def submodule(model: nn.Module, root: str) -> nn.Module:
    """``model``'s submodule at ``root`` (``""``: the model), or a ValueError naming the path and the choices."""
    if not root:
        return model
    try:
        return model.get_submodule(root)
    except AttributeError:
        children = [name for name, _ in model.named_children()]
        raise ValueError(
            f"root={root!r}: {type(model).__name__} has no submodule at that path; its children are "
            f"{children}. Pass the path of the denoiser whose blocks to cache (e.g. root='expert')."
        ) from None


def used_spec(module: nn.Module, path: str, calls: str, override: BlockSpec | None) -> BlockSpec | None:
    spec = block_spec(module)
    if spec is None:
        return None
    if override is not None:
        return override
    if calls == "pieces":
        if spec.pieces is None:
            raise ValueError(
                f"{path} ({qualified_name(type(module))}): the policy's profile says its layers are called in pieces, "
                "but this layer type has no pieces spec; register one with register_block(cls, BlockSpec(..., "
                "pieces=BlockSpec(...)))."
            )
        return spec.pieces
    return spec


def discover_branches(model: nn.Module, root: str = "") -> list[Branch]:
    """All branches of registered blocks in ``model`` (only under the submodule ``root`` when given),
    in module order (shallow to deep); names are paths from ``model``. Where ``model``'s policy profile
    says its layers are called in pieces (``calls="pieces"``) or gives a ``block_spec``, that spec is used."""
    from ._profiles import policy_profile  # profiles name specs; registry is imported first

    profile = policy_profile(model)
    out: list[Branch] = []
    layer = 0
    for path, module in submodule(model, root).named_modules(prefix=root):
        spec = used_spec(module, path, profile.calls, profile.block_spec)
        if spec is None:
            continue
        for b in spec.branches:
            out.append(
                Branch(
                    name=f"{path}.{b.name}" if path else b.name,
                    kind=b.kind,
                    layer=layer,
                    block=module,
                    output=module.get_submodule(b.output),
                    gates=tuple(module.get_submodule(g) for g in b.gates),
                    spec=b,
                )
            )
        layer += 1
    return out


def _norm_first(layer: nn.Module) -> bool:
    return bool(getattr(layer, "norm_first", False))


# torch.nn layers: compute order of TransformerDecoderLayer.forward is self_attn -> multihead_attn
# -> linear1 -> activation -> dropout -> linear2; each branch is followed only by its dropout
# (identity in eval), for norm_first True and False alike.
register_block(
    nn.TransformerDecoderLayer,
    BlockSpec(
        (
            BranchSpec("self_attn", "attn", "self_attn"),
            BranchSpec("cross_attn", "cross_attn", "multihead_attn"),
            BranchSpec("ffn", "ffn", "linear2", gates=("linear1",)),
        ),
        residual_sum=_norm_first,
    ),
)
register_block(
    nn.TransformerEncoderLayer,
    BlockSpec(
        (BranchSpec("self_attn", "attn", "self_attn"), BranchSpec("ffn", "ffn", "linear2", gates=("linear1",))),
        disable_fast_path=True,
        residual_sum=_norm_first,
    ),
)

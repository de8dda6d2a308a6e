"""Block registry: which module types are transformer blocks and where their branches live.

A *branch* is one residual summand of a block (self-attention, cross-attention, FFN). It is
named by the submodule whose output equals what the block adds to the residual stream
(``output``), plus submodules that run only to feed it (``gates``, skipped with it).
Dispatch is a table lookup on the module's type (walking its MRO), never an isinstance ladder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

BRANCH_KINDS = ("attn", "cross_attn", "ffn")


@dataclass(frozen=True)
class BranchSpec:
    """One cacheable branch of a block.

    ``output`` is the submodule path (relative to the block; ``""`` = the block itself) whose
    return value is the branch output; ``gates`` are submodule paths called earlier in the same
    branch that are skipped too (they return a placeholder the block never reads).
    """

    name: str
    kind: str
    output: str
    gates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in BRANCH_KINDS:
            raise ValueError(f"BranchSpec.kind={self.kind!r}: expected one of {BRANCH_KINDS}.")


@dataclass(frozen=True)
class BlockSpec:
    """The branches of a block type; ``disable_fast_path`` marks layers whose eval forward may bypass
    their submodules (torch's fused encoder-layer kernel) unless a forward pre-hook is present."""

    branches: tuple[BranchSpec, ...]
    disable_fast_path: bool = False


@dataclass(frozen=True)
class Branch:
    """A discovered branch: ``name`` = ``"{block path}.{branch name}"``; ``layer`` = block order."""

    name: str
    kind: str
    layer: int
    block: nn.Module = field(compare=False, repr=False)
    output: nn.Module = field(compare=False, repr=False)
    gates: tuple[nn.Module, ...] = field(default=(), compare=False, repr=False)


_REGISTRY: dict[type, BlockSpec] = {}


def register_block(block_type: type, spec: BlockSpec | list[BranchSpec] | tuple[BranchSpec, ...]) -> None:
    """Register ``block_type`` (a ``nn.Module`` subclass) so BAC discovers and caches its branches."""
    if not (isinstance(block_type, type) and issubclass(block_type, nn.Module)):
        raise TypeError(f"register_block: block_type={block_type!r} is not an nn.Module subclass.")
    if not isinstance(spec, BlockSpec):
        spec = BlockSpec(tuple(spec))
    if not spec.branches:
        raise ValueError(f"register_block({block_type.__name__}): spec has no branches; give at least one.")
    _REGISTRY[block_type] = spec


def unregister_block(block_type: type) -> None:
    _REGISTRY.pop(block_type, None)


def list_blocks() -> list[str]:
    """Names of the registered block types."""
    return sorted(f"{t.__module__}.{t.__qualname__}" for t in _REGISTRY)


def block_spec(module: nn.Module) -> BlockSpec | None:
    for cls in type(module).__mro__:
        spec = _REGISTRY.get(cls)
        if spec is not None:
            return spec
    return None


def discover_branches(model: nn.Module) -> list[Branch]:
    """All branches of registered blocks in ``model``, in module order (shallow to deep)."""
    out: list[Branch] = []
    layer = 0
    for path, module in model.named_modules():
        spec = block_spec(module)
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
                )
            )
        layer += 1
    return out


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
        )
    ),
)
register_block(
    nn.TransformerEncoderLayer,
    BlockSpec(
        (BranchSpec("self_attn", "attn", "self_attn"), BranchSpec("ffn", "ffn", "linear2", gates=("linear1",))),
        disable_fast_path=True,
    ),
)

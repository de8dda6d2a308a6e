"""A LeRobot VLA policy (pi0, pi0.5, SmolVLA) as a policylens teacher, with its own pre-processor.

``load_model(DIR)`` returns a :class:`LeRobotTeacher` for a directory written by LeRobot's
``save_pretrained`` (``config.json`` whose ``type`` is a LeRobot policy, ``model.safetensors``
and the saved ``policy_preprocessor.json`` pipeline) when ``lerobot`` is importable. Dataset
frames become the policy's inputs through that pre-processor — LeRobot's own normalisation,
resizing and tokenisation, not a re-implementation — so ``policylens cache build --policy DIR
--dataset lerobot:PATH`` caches what the policy computes on the frames it was trained on.

The teacher holds the policy as ``.policy``; its adapter is the policy's, with every path
under ``policy.``, so tap names are the policy's own (``llm.layers.{i}.out`` …).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from ..tap import Adapter, ImageTransform, Layout, register_adapter
from ._lerobot_adapters import lerobot_adapter, lerobot_layout

__all__ = ["LEROBOT_TYPES", "LeRobotTeacher", "is_lerobot_checkpoint", "load_lerobot_teacher"]

LEROBOT_TYPES = ("pi0", "pi05", "smolvla")
STATE_KEY = "observation.state"


class LeRobotTeacher(nn.Module):
    """``policy`` + ``preprocessor`` behind the interface the jobs use: ``make_batch``,
    ``token_layout``, ``run_prefix`` and ``sample_actions``."""

    def __init__(self, policy: nn.Module, preprocessor: Callable[[dict], dict], variant: str) -> None:
        super().__init__()
        if variant not in LEROBOT_TYPES:
            raise ValueError(f"LeRobotTeacher: variant={variant!r} is not one of {list(LEROBOT_TYPES)}")
        self.policy, self.preprocessor, self.variant = policy, preprocessor, variant
        cfg = policy.config
        state = cfg.input_features.get(STATE_KEY) if hasattr(cfg, "input_features") else None
        self.config = SimpleNamespace(
            cameras=list(cfg.image_features),
            state_dim=None if state is None else int(state.shape[0]),
            layers=len(_llm_layers(policy, variant)),
        )

    def make_batch(self, images: Mapping[str, Tensor], instructions: list[str], state: Tensor) -> dict[str, Tensor]:
        """Policy inputs from raw observations through the policy's pre-processor. ``images``:
        camera key → ``(B, H, W, 3)`` uint8; ``instructions``: B strings; ``state``: ``(B, D)``."""
        frame: dict = {
            cam: torch.as_tensor(img).permute(0, 3, 1, 2).float() / 255.0 for cam, img in images.items()
        }  # LeRobot images: (B, 3, H, W) in [0, 1]
        frame[STATE_KEY] = torch.as_tensor(state, dtype=torch.float32)
        frame["task"] = list(instructions)
        out = self.preprocessor(frame)
        return {k: v for k, v in out.items() if isinstance(v, Tensor)}

    def token_layout(self, batch: Mapping[str, Tensor]) -> Layout:
        return lerobot_layout(self.variant, self.policy, batch, tokenizer=self.tokenizer)

    def image_transform(self, frame_size: tuple[int, int]) -> ImageTransform:
        """How the policy turns an (H, W) camera frame into its model input, read from its config:
        pi0 / pi0.5 ``resize_with_pad_torch(img, *image_resolution)`` (bars centred, as openpi);
        SmolVLA ``resize_with_pad(img, *resize_imgs_with_padding)`` (width first, bars top and
        left; None: no resize). The attention job maps patch grids back onto frames with it."""
        cfg = self.policy.config
        if self.variant == "smolvla":
            size = getattr(cfg, "resize_imgs_with_padding", None)
            if size is None:
                return ImageTransform.resize(tuple(frame_size), tuple(frame_size))
            return ImageTransform.resize_with_pad(frame_size, (size[1], size[0]), bars="top_left")
        size = tuple(getattr(cfg, "image_resolution", None) or (cfg.image_size, cfg.image_size))
        if tuple(frame_size) == size:  # the policy resizes only when the size differs
            return ImageTransform.resize(size, size)
        return ImageTransform.resize_with_pad(frame_size, size, bars="centre")

    @property
    def tokenizer(self):
        """The pre-processor's tokenizer, or None: LeRobot's ``TokenizerProcessorStep`` keeps the one it
        loaded by name (every saved / ``from_pretrained`` pipeline) in ``input_tokenizer``; ``tokenizer``
        is only set when an object was handed in."""
        for step in getattr(self.preprocessor, "steps", ()):
            for attr in ("tokenizer", "input_tokenizer"):
                if getattr(step, attr, None) is not None:
                    return getattr(step, attr)
        return getattr(self.preprocessor, "tokenizer", None)

    @torch.no_grad()
    def run_prefix(self, batch: dict[str, Tensor]) -> Tensor:
        """The policy's own inference path (``predict_action_chunk``); capture with
        ``stop_early=True`` ends it after the prefix layers a cache needs."""
        return self.policy.predict_action_chunk(batch)

    @property
    def noise_shape(self) -> tuple[int, int]:
        """Per-sample shape of the flow noise: ``(chunk_size, max_action_dim)``, as LeRobot draws it."""
        cfg = self.policy.config
        return int(cfg.chunk_size), int(cfg.max_action_dim)

    @torch.no_grad()
    def sample_actions(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        steps: int | None = None,
        noise: Tensor | None = None,
        grad: bool = False,
    ) -> Tensor:
        """``predict_action_chunk`` from ``noise`` ``(B, *noise_shape)``, or with the policy's
        noise drawn from ``generator``'s seed (the global RNG is restored afterwards).
        ``steps`` is not used: LeRobot fixes the number of denoising steps in the config;
        stop a capture early instead. ``grad=True`` is refused: LeRobot's inference path runs
        without gradients (train through the policy's ``forward``)."""
        del steps
        if grad:
            raise NotImplementedError(
                "LeRobotTeacher.sample_actions(grad=True): LeRobot's predict_action_chunk runs under no_grad; "
                "a LeRobot student's bridge features need the policy's training forward"
            )
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            if noise is not None:
                return self.policy.predict_action_chunk(batch, noise=noise)
            return self.policy.predict_action_chunk(batch)


def _llm_layers(policy: nn.Module, variant: str) -> list:
    from ..tap import resolve_module

    return list(resolve_module(policy, lerobot_adapter(variant).component("llm").layers, "llm")[1])


def _prefixed(adapter: Adapter, prefix: str) -> Adapter:
    def under(paths: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(prefix + p for p in paths)

    components = tuple(replace(c, layers=under(c.layers), norm=under(c.norm)) for c in adapter.components)
    extras = {name: under(paths) for name, paths in adapter.extras.items()}
    return Adapter(name=adapter.name, components=components, extras=extras, layout=lambda m, b: m.token_layout(b))


def is_lerobot_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a LeRobot policy checkpoint (``config.json`` with a LeRobot VLA ``type``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("type") in LEROBOT_TYPES
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_lerobot_teacher(path: str | Path) -> LeRobotTeacher:
    """Load a LeRobot checkpoint directory with its saved pre-processor (needs ``lerobot``)."""
    variant = json.loads((Path(path) / "config.json").read_text())["type"]
    try:
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    except ImportError as exc:
        raise ImportError(
            f"{path} is a LeRobot {variant!r} checkpoint; loading it needs lerobot in this environment "
            "(pip install lerobot; pi0 / pi0.5 also need LeRobot's pi dependencies, see LeRobot's pi0 docs)."
        ) from exc
    policy = get_policy_class(variant).from_pretrained(str(path)).eval()
    preprocessor, _ = make_pre_post_processors(policy.config, pretrained_path=str(path))
    return LeRobotTeacher(policy, preprocessor, variant)


register_adapter(f"{__name__}.LeRobotTeacher", lambda m: _prefixed(lerobot_adapter(m.variant), "policy."))

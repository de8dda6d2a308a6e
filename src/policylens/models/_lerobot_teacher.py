"""A LeRobot VLA policy (pi0, pi0.5, SmolVLA) as a policylens teacher, with its own pre-processor.

``load_model(DIR)`` returns a :class:`LeRobotTeacher` for a directory written by LeRobot's
``save_pretrained`` (``config.json`` whose ``type`` is a LeRobot policy, ``model.safetensors``
and the saved ``policy_preprocessor.json`` pipeline) when ``lerobot`` is importable. Dataset
frames become the policy's inputs through that pre-processor — LeRobot's own normalisation,
resizing and tokenisation, not a re-implementation — so ``policylens cache build --policy DIR
--dataset lerobot:PATH`` caches what the policy computes on the frames it was trained on.

The teacher holds the policy as ``.policy``; its adapter is the policy's, with every path
under ``policy.``, so tap names are the policy's own (``llm.layers.{i}.out`` …).

Fine-tuning: ``make_batch(..., actions=)`` puts raw action chunks through the same pre-processor
(LeRobot's own action normalisation) and :meth:`LeRobotTeacher.training_loss` runs the policy's own
training ``forward`` on it — the loss LeRobot trains with. ``sample_actions(grad=True)`` runs the
inference path with the autograd graph kept (a retention student's bridge features).
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable, Mapping
from contextlib import contextmanager
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
ACTION_KEY = "action"
TIME_SAMPLING = (1.5, 1.0, 0.999, 0.001)  # LeRobot's Beta(alpha, beta) * scale + offset, unless the config says


def _pass_through(policy: nn.Module, batch: dict) -> Callable:
    """The policy's training ``forward`` with the keyword arguments it takes among ``noise`` / ``time``."""
    params = inspect.signature(policy.forward).parameters
    kwargs = {k: batch[k] for k in ("noise", "time") if k in params and k in batch}
    return lambda inputs: policy.forward(inputs, **kwargs)


class LeRobotTeacher(nn.Module):
    """``policy`` + ``preprocessor`` behind the interface the jobs use: ``make_batch``,
    ``token_layout``, ``run_prefix`` and ``sample_actions``."""

    def __init__(
        self,
        policy: nn.Module,
        preprocessor: Callable[[dict], dict],
        variant: str,
        postprocessor: Callable | None = None,
        source: str | Path | None = None,
    ) -> None:
        super().__init__()
        if variant not in LEROBOT_TYPES:
            raise ValueError(f"LeRobotTeacher: variant={variant!r} is not one of {list(LEROBOT_TYPES)}")
        self.policy, self.preprocessor, self.variant = policy, preprocessor, variant
        self.postprocessor, self.source = postprocessor, source
        cfg = policy.config
        state = cfg.input_features.get(STATE_KEY) if hasattr(cfg, "input_features") else None
        action = (getattr(cfg, "output_features", None) or {}).get(ACTION_KEY)
        self.config = SimpleNamespace(
            cameras=list(cfg.image_features),
            state_dim=None if state is None else int(state.shape[0]),
            action_dim=None if action is None else int(action.shape[0]),
            chunk_size=int(cfg.chunk_size),
            layers=len(_llm_layers(policy, variant)),
        )

    def make_batch(
        self, images: Mapping[str, Tensor], instructions: list[str], state: Tensor, actions: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Policy inputs from raw observations through the policy's pre-processor. ``images``:
        camera key → ``(B, H, W, 3)`` uint8; ``instructions``: B strings; ``state``: ``(B, D)``;
        ``actions``: raw action chunks ``(B, chunk_size, A)`` for :meth:`training_loss` (normalised by
        the pre-processor, as LeRobot's training does)."""
        frame: dict = {
            cam: torch.as_tensor(img).permute(0, 3, 1, 2).float() / 255.0 for cam, img in images.items()
        }  # LeRobot images: (B, 3, H, W) in [0, 1]
        frame[STATE_KEY] = torch.as_tensor(state, dtype=torch.float32)
        frame["task"] = list(instructions)
        if actions is not None:
            frame[ACTION_KEY] = torch.as_tensor(actions, dtype=torch.float32)
        out = self.preprocessor(frame)
        if actions is not None and not isinstance(out.get(ACTION_KEY), Tensor):
            raise ValueError(
                f"LeRobotTeacher.make_batch: the pre-processor of {self.source or self.variant} dropped "
                f"{ACTION_KEY!r}; save the policy with LeRobot's training pre-processor (policy_preprocessor.json)"
            )
        return {k: v for k, v in out.items() if isinstance(v, Tensor)}

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of a camera frame for :meth:`example_batch`: the config's image feature shape ``(C, H, W)``
        (what the dataset gave LeRobot), else the size the policy resizes to (pi ``image_resolution``,
        SmolVLA ``resize_imgs_with_padding`` (W, H), ``image_size``), else 224 x 224."""
        cfg = self.policy.config
        for feature in (cfg.image_features or {}).values():
            shape = getattr(feature, "shape", None)
            if shape is not None and len(shape) == 3:
                return int(shape[1]), int(shape[2])
        pad = getattr(cfg, "resize_imgs_with_padding", None)
        if pad:
            return int(pad[1]), int(pad[0])
        size = getattr(cfg, "image_resolution", None) or getattr(cfg, "image_size", None) or 224
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def example_batch(self, batch_size: int = 2, seed: int = 0, with_action: bool = False) -> dict[str, Tensor]:
        """Random uint8 frames of every camera at :meth:`frame_size`, sample instructions and random states
        through :meth:`make_batch` (the pre-processor's normalisation); ``with_action``: random raw action
        chunks too (``config.action_dim`` needed). For ``accel calibrate / eval``, ``synthetic:N``, probes."""
        g = torch.Generator().manual_seed(seed)
        cfg, (h, w) = self.config, self.frame_size()
        images = {c: torch.randint(0, 256, (batch_size, h, w, 3), generator=g, dtype=torch.uint8) for c in cfg.cameras}
        words = ["pick up the red cube", "put the cup in the tray", "open the drawer"]
        state = torch.randn(batch_size, cfg.state_dim or 0, generator=g)
        actions = None
        if with_action:
            if cfg.action_dim is None:
                raise ValueError(
                    f"LeRobotTeacher.example_batch: with_action=True but the config of {self.source or self.variant} "
                    "names no action feature ('action' in output_features); leave with_action out"
                )
            actions = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=g)
        return self.make_batch(images, [words[i % len(words)] for i in range(batch_size)], state, actions=actions)

    def training_noise(self, n: int, generator: torch.Generator, rng) -> dict[str, Tensor]:
        """``noise`` ``(n, *noise_shape)`` from ``generator`` and ``time`` ``(n,)`` from the numpy ``rng``,
        drawn as LeRobot draws them (Beta(α, β) · scale + offset from the config's ``time_sampling_*``)."""
        cfg = self.policy.config
        names = ("time_sampling_beta_alpha", "time_sampling_beta_beta", "time_sampling_scale", "time_sampling_offset")
        a, b, scale, offset = (getattr(cfg, k, d) for k, d in zip(names, TIME_SAMPLING, strict=True))
        noise = torch.randn((n, *self.noise_shape), generator=generator)
        time = torch.as_tensor(rng.beta(a, b, n) * scale + offset, dtype=torch.float32)
        return {"noise": noise, "time": time}

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The policy's own training loss (its ``forward(batch)``, LeRobot 0.4.4's ``(loss, dict)``) on a
        :meth:`make_batch` batch with ``actions``. ``noise`` / ``time`` in the batch go to a ``forward`` that
        takes them (SmolVLA); pi0 / pi0.5 draw their own from torch's generator."""
        if ACTION_KEY not in batch:
            raise KeyError(f"LeRobotTeacher.training_loss: the batch has no {ACTION_KEY!r}; make_batch(..., actions=)")
        inputs = {k: v for k, v in batch.items() if k not in ("noise", "time")}
        out = _pass_through(self.policy, batch)(inputs)
        loss = out[0] if isinstance(out, tuple) else out
        return loss.mean() if loss.dim() else loss

    def save_policy(self, directory: str | Path) -> Path:
        """The policy as a LeRobot checkpoint directory (``load_model(directory)`` reads it): the source
        directory's files, then the weights and pipelines as they are now."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.source is not None and Path(self.source).is_dir():
            for f in Path(self.source).iterdir():
                if f.is_file():
                    shutil.copy2(f, directory / f.name)
        if hasattr(self.policy, "save_pretrained"):
            self.policy.save_pretrained(str(directory))
        else:
            save_model(self.policy, str(directory / "model.safetensors"))
        for pipeline in (self.preprocessor, self.postprocessor):
            if hasattr(pipeline, "save_pretrained"):
                pipeline.save_pretrained(str(directory))
        return directory

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
        ``steps``: flow steps of this call (None: the config's); LeRobot reads the count from its config
        (SmolVLA ``num_steps``, pi0 / pi0.5 ``num_inference_steps`` when no ``num_steps`` is passed), so it
        is set there for the call and restored afterwards, also when the call raises. ``grad=True`` runs
        the same path with the graph kept (LeRobot's ``no_grad`` decorators on ``predict_action_chunk``
        and ``model.sample_actions`` stepped over) and the policy's train / eval mode restored
        (``predict_action_chunk`` sets eval)."""
        kwargs = {} if noise is None else {"noise": noise}
        with _flow_steps(self.policy.config, self.steps_field, steps), torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            if grad:
                with _with_grad(self.policy):
                    return inspect.unwrap(type(self.policy).predict_action_chunk)(self.policy, batch, **kwargs)
            return self.policy.predict_action_chunk(batch, **kwargs)

    @property
    def steps_field(self) -> str:
        """The config field that holds the flow step count: ``num_steps`` (SmolVLA) or
        ``num_inference_steps`` (pi0 / pi0.5)."""
        return "num_steps" if self.variant == "smolvla" else "num_inference_steps"


@contextmanager
def _flow_steps(config, field: str, steps: int | None):
    """``config.<field>`` set to ``steps`` inside the block (None: left as it is), restored on the way out."""
    if steps is None:
        yield
        return
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"LeRobotTeacher.sample_actions: steps={steps!r}; pass a flow step count >= 1 or None")
    if not hasattr(config, field):
        raise ValueError(
            f"LeRobotTeacher.sample_actions: steps={steps} but the policy config has no {field!r} to set; "
            "leave steps out (the config's count)"
        )
    before = getattr(config, field)
    setattr(config, field, steps)
    try:
        yield
    finally:
        setattr(config, field, before)


@contextmanager
def _with_grad(policy: nn.Module):
    """``policy.model.sample_actions`` without its ``no_grad`` decorator, and ``policy``'s mode kept."""
    training, inner = policy.training, getattr(policy, "model", None)
    method = getattr(type(inner), "sample_actions", None) if inner is not None else None
    if method is not None:
        inner.sample_actions = inspect.unwrap(method).__get__(inner)  # an instance attribute, removed below
    try:
        with torch.enable_grad():
            yield
    finally:
        if method is not None:
            del inner.sample_actions
        policy.train(training)


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
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=str(path))
    return LeRobotTeacher(policy, preprocessor, variant, postprocessor=postprocessor, source=path)


register_adapter(f"{__name__}.LeRobotTeacher", lambda m: _prefixed(lerobot_adapter(m.variant), "policy."))

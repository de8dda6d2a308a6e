"""A native transformers pi0 / pi0.5 with its processor, behind the interface every job uses.

``load_model(DIR)`` returns a :class:`NativePIPolicy` for a directory holding a
``PI0ForConditionalGeneration`` / ``PI05ForConditionalGeneration`` ``save_pretrained`` and its
processor's files (``processor.save_pretrained(DIR)``): ``make_batch`` runs frames, instructions
and states through that processor (the checkpoint's own normalisation statistics, tokenizer and
image settings), ``token_layout`` reads the spans (:func:`native_pi_layout`), ``sample_actions``
runs the model's flow-matching loop, ``image_transform`` maps patch grids back onto frames.

The processor's image processor (``PI0ImageProcessor``) runs on torchvision; where torchvision is
missing, :func:`pi_image_processor` gives the same settings on transformers' PIL backend (resize
into ``max_height`` x ``max_width`` keeping the aspect ratio, pad bottom and right, rescale,
normalise to [-1, 1]).

Cameras: the processor takes images in slot order and names none; the policy's camera names come
from ``cameras=`` (default: openpi's ``base_0_rgb``, ``left_wrist_0_rgb``, ``right_wrist_0_rgb``),
and a dataset's cameras are mapped onto them (``camera_map``, ``--camera-map``).

Fine-tuning: ``make_batch(..., actions=)`` normalises raw action chunks with the processor's
``actions_mean`` / ``actions_std`` (and pads them, as the processor does), and
:meth:`NativePIPolicy.training_loss` is the model's own training forward: transformers'
``forward(..., actions=, noise=, timestep=)`` computes the flow-matching loss
``mse(noise - actions, v(t·noise + (1-t)·actions, t))``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

from ..tap import ImageTransform, Layout, register_adapter
from ._hf_pi_adapters import NATIVE_PI, native_pi_layout, pi_variant
from ._lerobot_teacher import _prefixed  # the same wrapper-adapter rule: every path under the wrapper's attribute

__all__ = ["DEFAULT_CAMERAS", "NativePIPolicy", "is_native_pi_checkpoint", "load_native_pi", "pi_image_processor"]

DEFAULT_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
NATIVE_TYPES = {"pi0": "PI0ForConditionalGeneration", "pi05": "PI05ForConditionalGeneration"}


@cache
def _pil_class():
    from transformers.image_processing_backends import PilBackend
    from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling

    class PIImageProcessorPil(PilBackend):
        """``PI0ImageProcessor``'s settings on the PIL backend."""

        resample = PILImageResampling.BICUBIC
        image_mean = IMAGENET_STANDARD_MEAN
        image_std = IMAGENET_STANDARD_STD
        size = {"max_height": 224, "max_width": 224}  # noqa: RUF012 (the way transformers declares them)
        default_to_square = False
        do_resize = do_rescale = do_normalize = do_convert_rgb = do_pad = True
        image_seq_length = 256
        pad_size = {"height": 224, "width": 224}  # noqa: RUF012
        model_input_names = ["pixel_values"]  # noqa: RUF012

    return PIImageProcessorPil


def pi_image_processor(size: Mapping[str, int] | None = None, image_seq_length: int = 256, **settings):
    """An image processor with ``PI0ImageProcessor``'s behaviour that needs no torchvision. ``size``:
    ``{"max_height", "max_width"}`` (the pad size follows it unless ``pad_size`` is given)."""
    size = dict(size or {"max_height": 224, "max_width": 224})
    pad = settings.pop("pad_size", {"height": size["max_height"], "width": size["max_width"]})
    proc = _pil_class()(size=size, pad_size=pad, **settings)
    proc.image_seq_length = image_seq_length
    return proc


class NativePIPolicy(nn.Module):
    """``model`` (PI0 / PI05ForConditionalGeneration) + ``processor`` with ``make_batch``,
    ``token_layout``, ``image_transform``, ``sample_actions`` and ``run_prefix``."""

    def __init__(self, model: nn.Module, processor, cameras: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model, self.processor, self.variant = model, processor, pi_variant(model)
        stats = getattr(processor, "state_mean", None)
        actions = getattr(processor, "actions_mean", None)
        self.config = SimpleNamespace(
            cameras=list(cameras or DEFAULT_CAMERAS),
            state_dim=None if stats is None else len(stats),
            action_dim=None if actions is None else len(actions),
            layers=model.config.vlm_config.text_config.num_hidden_layers,
            chunk_size=model.config.chunk_size,
            flow_steps=model.config.num_inference_steps,
        )

    def make_batch(
        self, images: Mapping[str, Tensor], instructions: list[str], state: Tensor, actions: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The processor's inputs from raw observations: ``images`` camera -> ``(B, H, W, 3)`` uint8 (every
        camera of ``config.cameras``, in that order), ``instructions`` B strings, ``state`` ``(B, D)``;
        ``actions``: raw chunks ``(B, chunk_size, A)``, normalised and padded by the processor."""
        missing = [c for c in self.config.cameras if c not in images]
        if missing:
            raise KeyError(f"make_batch: no images for cameras {missing}; the policy reads {self.config.cameras}")
        frames = {c: np.asarray(torch.as_tensor(images[c]).cpu()) for c in self.config.cameras}
        per_sample = [[frames[c][i] for c in self.config.cameras] for i in range(len(instructions))]
        extra = {} if actions is None else {"actions": torch.as_tensor(actions).float()}
        out = self.processor(images=per_sample, text=list(instructions), state=torch.as_tensor(state).float(), **extra)
        return {k: v for k, v in out.items() if isinstance(v, Tensor)}

    def training_noise(self, n: int, generator: torch.Generator, rng) -> dict[str, Tensor]:
        """``noise`` ``(n, *noise_shape)`` from ``generator`` and ``time`` ``(n,)`` from the numpy ``rng``, from
        the model config's time distribution (Beta(α, β) · scale + offset), as its ``forward`` draws them."""
        cfg = self.model.config
        a, b = cfg.time_sampling_beta_alpha, cfg.time_sampling_beta_beta
        noise = torch.randn((n, *self.noise_shape), generator=generator)
        time = rng.beta(a, b, n) * cfg.time_sampling_scale + cfg.time_sampling_offset
        return {"noise": noise, "time": torch.as_tensor(time, dtype=torch.float32)}

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The model's own flow-matching loss on a :meth:`make_batch` batch with ``actions`` (``noise`` and
        ``time`` from the batch when there, else drawn by the model), reduced to the mean."""
        if "actions" not in batch:
            raise KeyError("NativePIPolicy.training_loss: the batch has no 'actions'; make_batch(..., actions=)")
        kwargs = {"noise": batch.get("noise"), "timestep": batch.get("time")}
        if self.variant == "pi0" and "state" not in batch:
            raise KeyError("NativePIPolicy.training_loss: pi0 reads 'state'; make_batch(..., state=)")
        loss = self.model(**self._inputs(batch), actions=batch["actions"], **kwargs).loss
        return loss.mean() if loss.dim() else loss

    def save_policy(self, directory: str | Path) -> Path:
        """``save_pretrained`` of the model and its processor into ``directory`` (``load_model`` reads it)."""
        directory = Path(directory)
        self.model.save_pretrained(str(directory))
        self.processor.save_pretrained(str(directory))
        return directory

    def token_layout(self, batch: Mapping[str, Tensor]) -> Layout:
        return native_pi_layout(self.model, batch, self.config.cameras, self.processor.tokenizer)

    def image_transform(self, frame_size: tuple[int, int]) -> ImageTransform:
        """The processor's resize (aspect kept, into ``max_height`` x ``max_width``, sizes truncated
        as transformers does) with the image at the top left and padding bottom and right."""
        ip = self.processor.image_processor
        size, pad = ip.size, ip.pad_size
        h, w = frame_size
        scale = min(size["max_height"] / h, size["max_width"] / w)
        return ImageTransform.place(tuple(frame_size), (int(h * scale), int(w * scale)), (pad["height"], pad["width"]))

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def noise_shape(self) -> tuple[int, int]:
        return int(self.model.config.chunk_size), int(self.model.config.max_action_dim)

    def _inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        keys = ["input_ids", "pixel_values", "attention_mask", "pixel_attention_mask"]
        if self.variant == "pi0":
            keys.append("state")
        return {k: batch[k] for k in keys if k in batch}

    def sample_actions(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        steps: int | None = None,
        noise: Tensor | None = None,
        grad: bool = False,
    ) -> Tensor:
        """``(B, chunk_size, max_action_dim)`` normalised actions by the model's flow-matching loop
        (``steps`` flow steps, default the config's) from ``noise`` or noise drawn from ``generator``.
        Without gradients it is transformers' ``sample_actions``; ``grad=True`` runs the same loop
        (prefix once into a cache, one expert pass per step, the cache cropped back to the prefix)
        with the autograd graph kept: a student's bridge features for a retention loss."""
        b = batch["input_ids"].shape[0]
        if noise is None:
            noise = torch.randn((b, *self.noise_shape), generator=generator)
        noise = noise.to(batch["pixel_values"].device, batch["pixel_values"].dtype)
        if not grad:
            with torch.no_grad():
                return self.model.sample_actions(**self._inputs(batch), noise=noise, num_steps=steps)
        return self._flow(self._inputs(batch), noise, steps or self.model.config.num_inference_steps)

    def _flow(self, inputs: dict[str, Tensor], x: Tensor, steps: int) -> Tensor:
        """transformers' ``sample_actions`` loop, outside ``no_grad`` (public calls only)."""
        model, mask = self.model, inputs.get("attention_mask")
        embeds = model.model.embed_prefix(inputs["input_ids"], inputs["pixel_values"], inputs["pixel_attention_mask"])
        cache = model.model.vlm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=None if mask is None else mask.cumsum(-1) - 1,
            token_type_ids=torch.zeros_like(embeds)[:, :, 0],
            use_cache=True,
        ).cache
        prefix = cache.get_seq_length()
        state = {"state": inputs["state"]} if "state" in inputs else {}
        dt = -1.0 / steps
        for k in range(steps):
            time = torch.full((x.shape[0],), 1.0 + k * dt, dtype=torch.float32, device=x.device)
            out = model(
                **state, noise=x, timestep=time, pixel_attention_mask=inputs["pixel_attention_mask"],
                attention_mask=mask, cache=cache,
            )  # fmt: skip
            cache.crop(prefix - cache.get_seq_length())
            x = x + dt * out.logits
        return x

    def example_batch(self, batch_size: int = 1, seed: int = 0, with_action: bool = False) -> dict[str, Tensor]:
        """Random frames of every camera at the processor's size, one instruction, a random state
        (``synthetic:N`` datasets, ``taps --probe``); ``with_action``: normalised ``actions`` too."""
        rng = np.random.default_rng(seed)
        size = self.processor.image_processor.size
        shape = (batch_size, size["max_height"], size["max_width"], 3)
        frames = {c: torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)) for c in self.config.cameras}
        state = rng.standard_normal((batch_size, self.config.state_dim or 0)).astype(np.float32)
        batch = self.make_batch(frames, ["pick up the cube"] * batch_size, torch.from_numpy(state))
        if with_action:
            shape = (batch_size, *self.noise_shape)
            batch["actions"] = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        return batch

    def forward(self, **batch: Tensor):
        """With ``actions``: the model's training forward (flow-matching loss, time and noise drawn);
        without: :meth:`sample_actions`."""
        if "actions" in batch:
            return self.model(**self._inputs(batch), actions=batch["actions"])
        return self.sample_actions(batch)

    def run_prefix(self, batch: dict[str, Tensor]) -> Tensor:
        """The inference path; a capture with ``stop_early=True`` ends it after the prefix layers it needs."""
        return self.sample_actions(batch, generator=torch.Generator().manual_seed(0))


def is_native_pi_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a native transformers pi0 / pi0.5 (``config.json`` ``model_type``)."""
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") in NATIVE_TYPES
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


def _load_processor(path: Path, variant: str):
    import transformers

    cls = getattr(transformers, "PI0Processor" if variant == "pi0" else "PI05Processor")
    if _torchvision_works():
        return cls.from_pretrained(str(path))
    from transformers import AutoTokenizer

    settings = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (path / name).is_file():
            saved = json.loads((path / name).read_text())
            settings = saved.get("image_processor", saved) if name == "processor_config.json" else saved
            extra = {k: v for k, v in saved.items() if k not in ("image_processor", "processor_class")}
            break
    else:
        raise FileNotFoundError(
            f"{path}: no processor_config.json or preprocessor_config.json; save the processor beside the model "
            "(processor.save_pretrained(DIR))"
        )
    image = pi_image_processor(
        settings.get("size"), settings.get("image_seq_length", 256), pad_size=settings.get("pad_size")
    )
    known = {"state_mean", "state_std", "actions_mean", "actions_std", "max_state_dim", "chunk_size"}
    known |= {"state_q01", "state_q99", "actions_q01", "actions_q99", "max_action_dim"}
    kwargs = {k: v for k, v in extra.items() if k in known}
    return cls(image_processor=image, tokenizer=AutoTokenizer.from_pretrained(str(path)), **kwargs)


def load_native_pi(path: str | Path, cameras: Sequence[str] | None = None) -> NativePIPolicy:
    """The model at ``path`` (``from_pretrained``) and its saved processor as a :class:`NativePIPolicy`."""
    import transformers

    path = Path(path)
    variant = json.loads((path / "config.json").read_text())["model_type"]
    if not hasattr(transformers, "PI05ForConditionalGeneration"):  # 5.24 had pi0 only, its processor on torchvision
        raise ImportError(
            f"{path} is a native transformers {variant} checkpoint; policylens runs those on transformers>=5.25 "
            f"(this is {transformers.__version__}): pip install 'transformers>=5.25'"
        )
    cls = getattr(transformers, NATIVE_TYPES[variant])
    model = cls.from_pretrained(str(path)).eval()
    return NativePIPolicy(model, _load_processor(path, variant), cameras)


register_adapter(f"{__name__}.NativePIPolicy", lambda _m: _prefixed(NATIVE_PI, "model."))

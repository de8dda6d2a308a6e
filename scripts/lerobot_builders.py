"""LeRobot's SmolVLA, pi0 and pi0.5 policies, built offline with random weights at tiny sizes on CPU.

policylens never depends on ``lerobot`` (it pins torch and transformers), so this module runs *inside the
venv that has the real lerobot 0.4.4*, never in policylens's own environment. It gives the real policy
classes, not stand-ins, for checks that must run LeRobot's own code paths::

    from lerobot_builders import build_smolvla, example_batch
    policy, pre, post = build_smolvla(empty_cameras=1)          # any SmolVLAConfig field as a keyword
    batch = example_batch(policy, pre, cameras_present=["top"])  # LeRobot's own pre-processor pipeline
    policy.select_action(batch); policy.predict_action_chunk(batch); loss, _ = policy.forward(batch)

``build_smolvla`` / ``build_pi0`` / ``build_pi05`` return ``(policy, preprocessor, postprocessor)`` (the
processors come from ``lerobot.policies.factory.make_pre_post_processors``); ``example_batch`` makes a raw
observation (+ action chunk) and runs it through the pre-processor; ``prefix_layout`` measures the token
layout with the policy's own ``embed_prefix`` / ``embed_suffix``; ``save_checkpoint`` / ``load_checkpoint``
use LeRobot's ``save_pretrained`` / ``from_pretrained`` (the reload is offline).

Tiny, how:

- SmolVLA runs on the transformers that lerobot pins (4.57.x). ``SmolVLAConfig.vlm_model_name`` points at a
  local directory holding a tiny ``SmolVLMConfig`` (Llama text model; vision tower with SmolVLM2's image
  geometry, 512 px, patch 16, ``scale_factor=4``, so 64 tokens per image) and a ``SmolVLMProcessor`` whose
  tokenizer is built in memory (``tokenizers`` WordLevel with the SmolVLM special tokens).
- pi0 / pi0.5 need LeRobot's patched transformers (what LeRobot's pi install brings:
  ``pip install -e ".[pi]"`` in a LeRobot source checkout; see LeRobot's
  pi0 documentation). Give its directory with ``--pi-transformers DIR`` or ``POLICYLENS_PI_TRANSFORMERS=DIR``:
  it goes first on ``sys.path`` before anything imports transformers. Without it they are skipped (unless
  the venv's own transformers is already the patched one). The sizes shrink by swapping, while the policy
  is built, three names in LeRobot's modeling module: ``get_gemma_config`` (it knows only gemma_2b /
  gemma_300m; 8 heads x 1 KV head stay, LeRobot's layer code hard-codes them), and the PaliGemma / Gemma
  classes, to shrink the SigLIP tower (LeRobot hard-codes intermediate 4304, projection 2048) and the
  vocabulary (257152). Images stay 224 px / patch 14 = 256 tokens. The PaliGemma tokenizer LeRobot's
  processors load by name is replaced by an in-memory WordLevel tokenizer (<pad>=0, <eos>=1, <bos>=2).

Check (builds all three, runs select_action, predict_action_chunk and forward once each, saves and reloads
offline, prints shapes and timings; under a minute on 2 CPU cores)::

    /tmp/lerobot_venv/bin/python scripts/lerobot_builders.py --check [--pi-transformers DIR]

pi0 / pi0.5 then run in a child interpreter with DIR first on ``PYTHONPATH`` (a process imports one
transformers), alongside SmolVLA, each on half the cores (``--threads`` overrides); ``--only pi0,pi05``
picks policies. SmolVLA also runs on the patched transformers, so where that is the venv's own (LeRobot's
LeRobot pi install) all three run in one process without ``--pi-transformers``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PI_TRANSFORMERS_ENV = "POLICYLENS_PI_TRANSFORMERS"
SIDECAR = "policylens_tiny.json"  # written next to a checkpoint: how it was built (sizes are not in LeRobot's config)
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"  # the name LeRobot's pi0 / pi0.5 processors load
TASK = "pick up the red cube"

# Tiny sizes. SmolVLA: Llama text model + SmolVLM vision tower (geometry kept: 512 px, patch 16, scale 4).
SMOLVLM_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
SMOLVLM_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 512,
    "patch_size": 16,
}
SMOLVLM_SCALE_FACTOR = 4
# pi0 / pi0.5: PaliGemma (gemma_2b slot) + action expert (gemma_300m slot) share depth, heads and head_dim.
PI_GEMMA = {
    "gemma_2b": {"width": 64, "depth": 4, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
    "gemma_300m": {"width": 32, "depth": 4, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
}
PI_SIGLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
PI_VOCAB = 512  # LeRobot: 257152; the tiny tokenizer's ids all fit

_WORDS = [
    *("Task", "State", "Action", "pick", "up", "put", "place", "push", "pull", "open", "close", "move"),
    *("the", "a", "an", "red", "green", "blue", "yellow", "cube", "block", "box", "bowl", "drawer", "cup"),
    *("in", "on", "into", "onto", "to", "left", "right", "of", "and", "then"),
]
_PUNCT = [":", ",", ";", ".", "\n"]
# the simulator's instructions ("reach the purple ball", "hover above the cube", "lift the gripper"), after
# the numbers so that the ids above keep their values
_SIM_WORDS = ["reach", "hover", "above", "lift", "gripper", "tray", "ball", "cylinder", "purple", "orange"]
_SMOLVLM_SPECIALS = {
    "unk_token": "<|endoftext|>",
    "bos_token": "<|im_start|>",
    "pad_token": "<|im_end|>",
    "eos_token": "<end_of_utterance>",
}
_SMOLVLM_EXTRA = {
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
}


# ---- transformers: stock for SmolVLA, patched for pi0 / pi0.5 ---------------------------------------------


def pi_transformers_path(path: str | os.PathLike | None = None) -> str | None:
    """The patched-transformers directory: ``path``, else ``$POLICYLENS_PI_TRANSFORMERS``, else None."""
    path = path or os.environ.get(PI_TRANSFORMERS_ENV) or None
    return str(Path(path).resolve()) if path else None


def use_pi_transformers(path: str | os.PathLike | None = None) -> None:
    """Make LeRobot's patched transformers the one this process imports (pi0 / pi0.5 need it).

    ``path`` (or ``$POLICYLENS_PI_TRANSFORMERS``) goes first on ``sys.path``; that only works before
    anything has imported ``transformers`` (importing lerobot's policies does). Without a path, the
    transformers already importable must be the patched one. Raises RuntimeError otherwise.
    """
    path = pi_transformers_path(path)
    if path and "transformers" not in sys.modules:
        if not Path(path, "transformers").is_dir():
            raise RuntimeError(f"{path} holds no transformers package ({PI_TRANSFORMERS_ENV} / --pi-transformers)")
        sys.path.insert(0, path)
        importlib.invalidate_caches()
    import transformers

    where = str(Path(transformers.__file__).resolve())
    if path and not where.startswith(path + os.sep):
        raise RuntimeError(
            f"transformers was imported from {where} before {path} could go first on sys.path: "
            f"start the interpreter with PYTHONPATH={path} (or call use_pi_transformers first)"
        )
    if not pi_transformers_available():
        raise RuntimeError(
            f"transformers {transformers.__version__} at {where} is not LeRobot's patched one, "
            "which pi0 / pi0.5 need: install it as LeRobot documents "
            '(pip install -e ".[pi]" in a LeRobot source checkout) '
            f"or give its directory with --pi-transformers / {PI_TRANSFORMERS_ENV}"
        )


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The interop scripts' shared options: ``--pi-transformers``, ``--only`` and the pi child's ``--rows``."""
    parser.add_argument("--pi-transformers", help=f"LeRobot's patched transformers (or ${PI_TRANSFORMERS_ENV})")
    parser.add_argument("--only", default="smolvla,pi0,pi05", help="comma-separated: smolvla, pi0, pi05")
    parser.add_argument("--rows", help=argparse.SUPPRESS)  # the pi child writes its rows here as JSON


def run_pi_child(script: str, kinds: list[str], out: Path, transformers_path: str, *extra: str) -> tuple[int, list]:
    """Run ``script --only KINDS --out OUT --rows FILE EXTRA`` in a child interpreter with LeRobot's patched
    transformers first on ``PYTHONPATH`` (a process imports one transformers); returns its exit code and the
    rows it wrote (none if it wrote none)."""
    rows = Path(out) / "rows-pi.json"
    rows.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [transformers_path, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, script, "--only", ",".join(kinds), "--out", str(out), "--rows", str(rows), *extra]
    rc = subprocess.run(cmd, env=env, check=False).returncode
    return rc, json.loads(rows.read_text()) if rows.exists() else []


def pi_transformers_available() -> bool:
    """Whether the imported transformers passes LeRobot's own gate for pi0 / pi0.5."""
    try:
        from transformers.models.siglip import check
    except ImportError:
        return False
    return bool(check.check_whether_transformers_replace_is_installed_correctly())


# ---- tokenizers built in memory -----------------------------------------------------------------------------


def _word_tokenizer(specials: list[str], *, add_bos: str | None = None, **special_tokens: Any):
    """A WordLevel tokenizer: ``specials`` first (ids 0..), then a few words, punctuation, 0..255 and the
    simulator's words."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in [*specials, *_WORDS, *_PUNCT, *map(str, range(256)), *_SIM_WORDS]:
        vocab.setdefault(tok, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special_tokens["unk_token"]))
    # words, numbers, runs of punctuation and newlines are tokens; other whitespace is dropped
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n|\w+|[^\w\s]"), behavior="removed", invert=True)
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{add_bos} $A", special_tokens=[(add_bos, vocab[add_bos])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, model_input_names=["input_ids", "attention_mask"], **special_tokens
    )


def smolvlm_tokenizer():
    """SmolVLM2's special tokens (``fake_image_token_id`` / ``global_image_token_id`` as LeRobot reads them)."""
    specials = [*_SMOLVLM_SPECIALS.values(), *[t for t in _SMOLVLM_EXTRA.values() if t != "<end_of_utterance>"]]
    return _word_tokenizer(specials, extra_special_tokens=dict(_SMOLVLM_EXTRA), **_SMOLVLM_SPECIALS)


def paligemma_tokenizer():
    """Gemma's special-token ids (<pad>=0, <eos>=1, <bos>=2, <unk>=3); adds <bos> like PaliGemma's tokenizer."""
    return _word_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>"],
        add_bos="<bos>",
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


# ---- features, stats ---------------------------------------------------------------------------------------


def _features(cameras, image_shape, state_dim, action_dim):
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (state_dim,))}
    for cam in cameras:
        inputs[f"observation.images.{cam}"] = PolicyFeature(FeatureType.VISUAL, tuple(image_shape))
    return inputs, {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}


def dataset_stats(state_dim: int, action_dim: int) -> dict[str, dict[str, Any]]:
    """Stats for every normalization mode LeRobot has (MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10); values on
    [-1, 1] map to themselves under QUANTILES (pi0.5 discretizes the normalized state on [-1, 1])."""
    import torch

    def stats(d):
        one = torch.ones(d)
        return {
            "mean": 0 * one,
            "std": one,
            "min": -one,
            "max": one,
            "q01": -one,
            "q99": one,
            "q10": -0.8 * one,
            "q90": 0.8 * one,
        }

    return {"observation.state": stats(state_dim), "action": stats(action_dim)}


# ---- SmolVLA --------------------------------------------------------------------------------------------------


def write_tiny_smolvlm(
    directory: str | os.PathLike,
    text: dict | None = None,
    vision: dict | None = None,
    scale_factor: int = SMOLVLM_SCALE_FACTOR,
) -> Path:
    """Write a tiny SmolVLM (``config.json`` + processor + tokenizer) that ``SmolVLAConfig.vlm_model_name``
    can point at with ``load_vlm_weights=False``. Returns the directory."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = smolvlm_tokenizer()
    vision = {**SMOLVLM_VISION, **(vision or {})}
    side = vision["image_size"] // vision["patch_size"] // scale_factor
    SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=side * side,
    ).save_pretrained(directory)
    text = {
        "model_type": "llama",
        **SMOLVLM_TEXT,
        **(text or {}),
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
    }
    SmolVLMConfig(
        text_config=text,
        vision_config=vision,
        scale_factor=scale_factor,
        pad_token_id=tok.pad_token_id,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    ).save_pretrained(directory)
    return directory


def build_smolvla(
    *,
    cameras=("top", "wrist"),
    image_shape=(3, 48, 64),
    state_dim=6,
    action_dim=6,
    chunk_size=10,
    num_steps=3,
    assets_dir=None,
    text=None,
    vision=None,
    seed=0,
    device="cpu",
    **config,
):
    """A random tiny ``SmolVLAPolicy`` and its LeRobot processors: ``(policy, preprocessor, postprocessor)``.

    ``config`` goes to ``SmolVLAConfig`` (``empty_cameras``, ``add_image_special_tokens``, ``prefix_length``,
    ``resize_imgs_with_padding``, ...). The tiny SmolVLM is written to ``assets_dir`` (a temp dir if None).
    """
    import torch
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    vlm_dir = write_tiny_smolvlm(
        Path(assets_dir or tempfile.mkdtemp(prefix="policylens-smolvlm-")) / "smolvlm", text, vision
    )
    layers = json.loads((vlm_dir / "config.json").read_text())["text_config"]["num_hidden_layers"]
    inputs, outputs = _features(cameras, image_shape, state_dim, action_dim)
    config = {
        "chunk_size": chunk_size,
        "n_action_steps": chunk_size,
        "num_steps": num_steps,
        "num_vlm_layers": layers,
        "device": device,
        **config,
    }
    cfg = SmolVLAConfig(
        vlm_model_name=str(vlm_dir), load_vlm_weights=False, input_features=inputs, output_features=outputs, **config
    )
    torch.manual_seed(seed)
    with _quiet():  # SmolVLMWithExpertModel prints "Reducing the number of VLM layers ..."
        policy = SmolVLAPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=dataset_stats(state_dim, action_dim))
    return policy, pre, post


# ---- pi0 / pi0.5 ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_pi_sizes(modeling, gemma: dict | None = None, siglip: dict | None = None, vocab: int | None = PI_VOCAB):
    """While active, LeRobot's pi0 / pi0.5 ``modeling`` module builds tiny models: ``get_gemma_config``
    answers ``gemma`` sizes, the SigLIP tower is shrunk to ``siglip`` (projection = PaliGemma width) and
    both vocabularies to ``vocab`` (None keeps 257152)."""
    gemma = {k: {**PI_GEMMA[k], **(gemma or {}).get(k, {})} for k in PI_GEMMA}
    siglip = {**PI_SIGLIP, **(siglip or {})}
    saved = {
        n: getattr(modeling, n) for n in ("get_gemma_config", "PaliGemmaForConditionalGeneration", "GemmaForCausalLM")
    }

    def get_gemma_config(variant):
        if variant not in gemma:
            raise ValueError(f"Unknown variant: {variant}")
        return modeling.GemmaConfig(**gemma[variant])

    def paligemma(config):
        for key, value in siglip.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        if vocab:
            config.text_config.vocab_size = vocab
            config._vocab_size = vocab  # set the same way by LeRobot
        return saved["PaliGemmaForConditionalGeneration"](config=config)

    def gemma_lm(config):
        if vocab:
            config.vocab_size = vocab
        return saved["GemmaForCausalLM"](config=config)

    modeling.get_gemma_config = get_gemma_config
    modeling.PaliGemmaForConditionalGeneration = paligemma
    modeling.GemmaForCausalLM = gemma_lm
    try:
        yield {"gemma": gemma, "siglip": siglip, "vocab": vocab}
    finally:
        for name, value in saved.items():
            setattr(modeling, name, value)


@contextlib.contextmanager
def _local_tokenizer(name: str, tokenizer):
    """While active, LeRobot's TokenizerProcessorStep gets ``tokenizer`` when it asks for ``name``."""
    from lerobot.processor import tokenizer_processor

    real = tokenizer_processor.AutoTokenizer

    class _Auto:
        @staticmethod
        def from_pretrained(path, *args, **kwargs):
            return tokenizer if str(path) == name else real.from_pretrained(path, *args, **kwargs)

    tokenizer_processor.AutoTokenizer = _Auto
    try:
        yield
    finally:
        tokenizer_processor.AutoTokenizer = real


def _tokenizer_step(pipeline):
    from lerobot.processor import TokenizerProcessorStep

    return next(s for s in pipeline.steps if isinstance(s, TokenizerProcessorStep))


def _build_pi(
    kind,
    transformers_path=None,
    *,
    cameras=("top", "wrist"),
    image_shape=(3, 48, 64),
    state_dim=6,
    action_dim=6,
    chunk_size=10,
    num_steps=3,
    assets_dir=None,
    gemma=None,
    siglip=None,
    vocab=PI_VOCAB,
    seed=0,
    device="cpu",
    **config,
):
    use_pi_transformers(transformers_path)
    import torch
    from lerobot.policies.factory import make_pre_post_processors

    if kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    else:
        from lerobot.policies.pi05 import modeling_pi05 as modeling
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    policy_cls = modeling.PI0Policy if kind == "pi0" else modeling.PI05Policy
    inputs, outputs = _features(cameras, image_shape, state_dim, action_dim)
    config = {"chunk_size": chunk_size, "n_action_steps": chunk_size, "num_inference_steps": num_steps, **config}
    cfg = Config(input_features=inputs, output_features=outputs, device=device, **config)
    torch.manual_seed(seed)
    with tiny_pi_sizes(modeling, gemma, siglip, vocab) as sizes:
        policy = policy_cls(cfg)
    policy._policylens_tiny = sizes  # read by save_checkpoint
    tok = paligemma_tokenizer()
    with _local_tokenizer(PALIGEMMA_TOKENIZER, tok):
        pre, post = make_pre_post_processors(cfg, dataset_stats=dataset_stats(state_dim, action_dim))
    tok_dir = Path(assets_dir or tempfile.mkdtemp(prefix=f"policylens-{kind}-")) / "tokenizer"
    tok.save_pretrained(tok_dir)
    _tokenizer_step(pre).tokenizer_name = str(tok_dir)  # what save_pretrained records: a local, loadable name
    return policy, pre, post


def build_pi0(*, transformers_path=None, **options):
    """A random tiny ``PI0Policy`` and its LeRobot processors: ``(policy, preprocessor, postprocessor)``.

    Needs LeRobot's patched transformers: ``transformers_path`` (or ``$POLICYLENS_PI_TRANSFORMERS``) is put
    first on ``sys.path`` if transformers is not imported yet. ``options``: ``cameras``, ``image_shape``,
    ``state_dim``, ``action_dim``, ``chunk_size``, ``num_steps``, ``assets_dir``, ``seed``, ``device`` as in
    :func:`build_smolvla`; ``gemma`` (``{"gemma_2b": {...}, "gemma_300m": {...}}``), ``siglip`` and ``vocab``
    override the tiny sizes; anything else goes to ``PI0Config`` (``empty_cameras``, ...).
    """
    return _build_pi("pi0", transformers_path, **options)


def build_pi05(*, transformers_path=None, **options):
    """A random tiny ``PI05Policy`` and its LeRobot processors (options as in :func:`build_pi0`; the rest goes
    to ``PI05Config``). Its pre-processor writes the discretized state into the prompt."""
    return _build_pi("pi05", transformers_path, **options)


# ---- batches ----------------------------------------------------------------------------------------------------


def camera_keys(policy) -> list[str]:
    """The policy's real cameras (``config.image_features`` less the ``empty_camera_*`` it adds itself)."""
    return [k for k in policy.config.image_features if ".empty_camera_" not in k]


def example_batch(policy, preprocessor, cameras_present=None, batch_size=2, with_action=True, task=TASK, seed=0):
    """A raw observation run through ``preprocessor``, ready for ``select_action`` / ``predict_action_chunk``
    (and ``forward`` when ``with_action``: an action chunk of ``chunk_size`` steps is added).

    ``cameras_present``: camera names (``"top"``) or keys (``"observation.images.top"``) to put in the batch,
    in any order (the policy orders them itself); None = all. Images are float on [0, 1] at the feature's
    shape; state and action on [-1, 1]; ``task`` a string or one string per sample.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    keys = camera_keys(policy)
    if cameras_present is not None:
        wanted = {c if c.startswith("observation.images.") else f"observation.images.{c}" for c in cameras_present}
        unknown = wanted - set(keys)
        if unknown:
            raise KeyError(f"example_batch: unknown cameras {sorted(unknown)}; the policy has {keys}")
        keys = [k for k in keys if k in wanted]
    b = batch_size
    raw: dict[str, Any] = {"task": [task] * b if isinstance(task, str) else list(task)}
    for key in keys:
        raw[key] = torch.rand((b, *policy.config.image_features[key].shape), generator=g)
    raw["observation.state"] = torch.rand((b, *policy.config.robot_state_feature.shape), generator=g) * 2 - 1
    if with_action:
        action_dim = policy.config.action_feature.shape[0]
        raw["action"] = torch.rand((b, policy.config.chunk_size, action_dim), generator=g) * 2 - 1
    return preprocessor(raw)


# ---- token layout, measured with the policy's own code -------------------------------------------------------


def prefix_layout(policy, batch, preprocessor=None) -> dict[str, Any]:
    """The prefix / suffix token layout the policy builds for ``batch`` (a pre-processed batch), measured by
    running the policy's own image preparation, ``embed_prefix`` and ``embed_suffix``.

    Returns ``prefix_len``, ``suffix_len``, ``tokens_per_image``, ``segments`` (name -> (start, stop) in the
    prefix: ``image[<camera key>]`` in the policy's order, ``special[...]``, ``text``, ``state``, ``padding``),
    ``padding_slots`` (missing camera keys that got a padding image, mask 0: LeRobot appends the padding
    images after the cameras present without naming them; they are given to the missing keys in config
    order), ``dropped_cameras`` (missing keys with no tokens at all), ``suffix`` (name -> (start, stop)),
    the boolean ``pad_mask`` / integer ``att_mask`` tensors of prefix and suffix, and for pi0.5 with a
    ``preprocessor`` given, ``state_in_text``: per sample, the (start, stop) prefix positions of the
    discretized state numbers inside the prompt.
    """
    import torch

    name = policy.name
    model = policy.model
    cfg = policy.config
    tokens, lang = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
    present = [k for k in cfg.image_features if k in batch]
    missing = [k for k in cfg.image_features if k not in batch]
    with torch.no_grad():
        if name == "smolvla":
            images, masks = policy.prepare_images(batch)
            state = policy.prepare_state(batch)
            pre = model.embed_prefix(images, masks, tokens, lang, state=state)
            per_image = model.vlm_with_expert.embed_image(images[0][:1]).shape[1]
            padded = missing[: cfg.empty_cameras]
            special = (2, 1) if cfg.add_image_special_tokens else (0, 0)
        else:
            images, masks = policy._preprocess_images(batch)
            pre = model.embed_prefix(images, masks, tokens, lang)
            per_image = model.paligemma_with_expert.embed_image(images[0][:1]).shape[1]
            padded, special = missing, (0, 0)
        b = tokens.shape[0]
        x = torch.zeros(b, cfg.chunk_size, cfg.max_action_dim)
        t = torch.full((b,), 0.5)
        if name == "pi0":
            suf = model.embed_suffix(policy.prepare_state(batch), x, t)
        else:
            suf = model.embed_suffix(x, t)
    segments: dict[str, tuple[int, int]] = {}
    pos = 0
    for key in present + padded:
        if special[0]:
            segments[f"special[{key}].start"] = (pos, pos + special[0])
            pos += special[0]
        segments[f"image[{key}]"] = (pos, pos + per_image)
        pos += per_image
        if special[1]:
            segments[f"special[{key}].end"] = (pos, pos + special[1])
            pos += special[1]
    segments["text"] = (pos, pos + tokens.shape[1])
    pos += tokens.shape[1]
    if name == "smolvla":
        segments["state"] = (pos, pos + 1)
        pos += 1
    prefix_len = pre[0].shape[1]
    if prefix_len > pos:
        segments["padding"] = (pos, prefix_len)
    elif prefix_len != pos:
        raise AssertionError(f"{name}: layout counts {pos} prefix tokens, embed_prefix made {prefix_len}")
    expected = torch.zeros_like(pre[1])  # the pad mask these segments imply, checked against embed_prefix's
    for seg, (a, z) in segments.items():
        expected[:, a:z] = seg not in ("padding", *(f"image[{k}]" for k in padded))
    expected[:, slice(*segments["text"])] = lang
    if not torch.equal(expected, pre[1]):
        raise AssertionError(f"{name}: the pad mask of embed_prefix does not match the layout {segments}")
    suffix = {"state": (0, 1)} if name == "pi0" else {}
    suffix["actions"] = (len(suffix), len(suffix) + cfg.chunk_size)
    assert suf[0].shape[1] == suffix["actions"][1], (suf[0].shape, suffix)
    out = {
        "prefix_len": prefix_len,
        "suffix_len": suf[0].shape[1],
        "tokens_per_image": per_image,
        "segments": segments,
        "padding_slots": padded,
        "dropped_cameras": [k for k in missing if k not in padded],
        "suffix": suffix,
        "prefix_pad_mask": pre[1],
        "prefix_att_mask": pre[2].long(),
        "suffix_pad_mask": suf[1],
        "suffix_att_mask": suf[2].long(),
    }
    if name == "pi05" and preprocessor is not None:
        out["state_in_text"] = _pi05_state_positions(batch, _tokenizer_step(preprocessor), segments["text"][0])
    return out


def _pi05_state_positions(batch, step, text_start):
    """Prefix positions of the state numbers pi0.5's pre-processor wrote into ``Task: ..., State: ...;``."""
    spans = []
    for prompt in batch["task"]:
        lo = prompt.index("State: ") + len("State: ")
        hi = prompt.index(";\nAction: ", lo)
        enc = step.input_tokenizer(prompt, return_offsets_mapping=True, max_length=step.max_length, truncation=True)
        idx = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and lo <= a and b <= hi]
        spans.append((text_start + idx[0], text_start + idx[-1] + 1) if idx else None)
    return spans


# ---- checkpoints ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _swapped(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def save_checkpoint(policy, preprocessor, postprocessor, directory) -> Path:
    """Save with LeRobot's own ``save_pretrained`` (policy: ``config.json`` + ``model.safetensors``; processors:
    ``policy_preprocessor.json`` / ``policy_postprocessor.json`` + their state). The tiny SmolVLM / tokenizer go
    into the checkpoint and the saved names point there (absolute paths: moving the directory breaks them), so
    :func:`load_checkpoint` works offline; the tiny pi sizes (not part of LeRobot's config) go to
    ``policylens_tiny.json``."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    step = _tokenizer_step(preprocessor)
    sidecar: dict[str, Any] = {"policy": policy.name, "built_by": "scripts/lerobot_builders.py"}
    with contextlib.ExitStack() as stack:
        if policy.name == "smolvla":
            vlm_dir = directory / "smolvlm"
            if Path(policy.config.vlm_model_name).resolve() != vlm_dir:
                shutil.copytree(policy.config.vlm_model_name, vlm_dir, dirs_exist_ok=True)
            stack.enter_context(_swapped(policy.config, "vlm_model_name", str(vlm_dir)))
            stack.enter_context(_swapped(step, "tokenizer_name", str(vlm_dir)))
        else:
            tok_dir = directory / "tokenizer"
            step.input_tokenizer.save_pretrained(tok_dir)
            stack.enter_context(_swapped(step, "tokenizer_name", str(tok_dir)))
            sidecar["tiny_sizes"] = policy._policylens_tiny
        policy.save_pretrained(directory)
        preprocessor.save_pretrained(directory)
        postprocessor.save_pretrained(directory)
    (directory / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
    return directory


def at_tiny_sizes(kind: str, checkpoint) -> contextlib.ExitStack:
    """While open, LeRobot loads ``checkpoint`` (a ``kind`` policy: smolvla, pi0, pi05) at its tiny sizes, which
    LeRobot's config does not hold (``load_model(checkpoint)``, ``build_cache`` on it, a reload)."""
    stack = contextlib.ExitStack()
    stack.enter_context(_quiet())  # LeRobot's banners and key-remapping notes
    if kind != "smolvla":
        sizes = json.loads((Path(checkpoint) / SIDECAR).read_text())["tiny_sizes"]
        modeling = importlib.import_module(f"lerobot.policies.{kind}.modeling_{kind}")
        stack.enter_context(tiny_pi_sizes(modeling, sizes["gemma"], sizes["siglip"], sizes["vocab"]))
    return stack


def load_checkpoint(directory, transformers_path=None):
    """Reload a :func:`save_checkpoint` directory with LeRobot's ``<Policy>.from_pretrained`` and
    ``make_pre_post_processors(config, pretrained_path=...)``: ``(policy, preprocessor, postprocessor)``."""
    directory = Path(directory)
    sidecar = json.loads((directory / SIDECAR).read_text())
    kind = sidecar["policy"]
    with contextlib.ExitStack() as stack:
        if kind == "smolvla":
            from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

            policy_cls = SmolVLAPolicy
            stack.enter_context(_quiet())
        else:
            use_pi_transformers(transformers_path)
            if kind == "pi0":
                from lerobot.policies.pi0 import modeling_pi0 as modeling
            else:
                from lerobot.policies.pi05 import modeling_pi05 as modeling
            policy_cls = modeling.PI0Policy if kind == "pi0" else modeling.PI05Policy
            sizes = sidecar["tiny_sizes"]
            stack.enter_context(tiny_pi_sizes(modeling, sizes["gemma"], sizes["siglip"], sizes["vocab"]))
            stack.enter_context(_quiet())  # PI0Policy.from_pretrained prints a banner and key remapping
        policy = policy_cls.from_pretrained(directory)
    # PI0Policy.from_pretrained prints and returns the random model when loading fails: check the weights
    from safetensors.torch import load_file

    state, saved = policy.state_dict(), load_file(directory / "model.safetensors")
    wrong = [k for k, v in saved.items() if k not in state or not state[k].equal(v)]
    if wrong:
        raise RuntimeError(f"{policy_cls.__name__}.from_pretrained({directory}) did not load {len(wrong)} tensors")
    if kind != "smolvla":
        policy._policylens_tiny = sidecar["tiny_sizes"]
    from lerobot.policies.factory import make_pre_post_processors

    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(directory))
    return policy, pre, post


@contextlib.contextmanager
def _quiet():
    """Silence LeRobot's prints and root-logger warnings (banners, "Reducing the number of VLM layers", ...)."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        logging.disable(previous)


# ---- --check --------------------------------------------------------------------------------------------------


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else x


def _fmt_layout(lay) -> str:
    seg = " ".join(
        f"{k.replace('observation.images.', '')}[{a}:{b}]" for k, a_b in lay["segments"].items() for a, b in [a_b]
    )
    suf = " ".join(f"{k}[{a}:{b}]" for k, (a, b) in lay["suffix"].items())
    extra = ""
    if lay["padding_slots"]:
        extra += f"; padding images: {[k.split('.')[-1] for k in lay['padding_slots']]}"
    if lay["dropped_cameras"]:
        extra += f"; dropped (no tokens): {[k.split('.')[-1] for k in lay['dropped_cameras']]}"
    if lay.get("state_in_text"):
        extra += f"; state numbers at {lay['state_in_text']}"
    return f"prefix {lay['prefix_len']}: {seg}{extra} | suffix {lay['suffix_len']}: {suf}"


def check_policy(kind: str, transformers_path=None) -> None:
    """Build one policy; run select_action, predict_action_chunk and forward (+ backward); save it, reload it
    offline and check that weights, pre-processed batch and actions (same noise seed) are equal."""
    with tempfile.TemporaryDirectory(prefix=f"policylens-{kind}-check-") as work:
        _check_policy(kind, transformers_path, Path(work))


def _check_policy(kind, transformers_path, work: Path) -> None:
    import torch

    build = {"smolvla": build_smolvla, "pi0": build_pi0, "pi05": build_pi05}[kind]
    kwargs = {"assets_dir": work / "assets"}
    if kind != "smolvla":
        kwargs["transformers_path"] = transformers_path
    t0 = time.perf_counter()
    if kind != "smolvla":
        use_pi_transformers(transformers_path)
    importlib.import_module("lerobot.policies.factory")
    importlib.import_module(f"lerobot.policies.{kind}.modeling_{kind}")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy, pre, post = build(**kwargs)
    t_build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in policy.parameters())
    batch = example_batch(policy, pre)
    t0 = time.perf_counter()
    action = policy.select_action(dict(batch))
    t_select = time.perf_counter() - t0
    torch.manual_seed(1)
    chunk = policy.predict_action_chunk(dict(batch))
    policy.train()
    t0 = time.perf_counter()
    loss, _ = policy.forward(dict(batch))
    loss.backward()
    t_forward = time.perf_counter() - t0
    lay = prefix_layout(policy, batch, pre)
    print(
        f"[{kind}] imports {t_import:.1f}s, built in {t_build:.2f}s ({n_params / 1e6:.2f}M params); "
        f"select_action {_shape(action)} in {t_select:.2f}s; predict_action_chunk {_shape(chunk)}; "
        f"postprocessed {_shape(post(action))}; "
        f"forward loss {loss.item():.3f} + backward in {t_forward:.2f}s"
    )
    print(f"[{kind}] batch: " + ", ".join(f"{k}{list(_shape(v))}" for k, v in batch.items() if hasattr(v, "shape")))
    print(f"[{kind}] {_fmt_layout(lay)}")
    d = work / "checkpoint"
    t0 = time.perf_counter()
    save_checkpoint(policy, pre, post, d)
    t_save = time.perf_counter() - t0
    files = sorted(p.name for p in d.iterdir())
    t0 = time.perf_counter()
    policy2, pre2, _ = load_checkpoint(d, transformers_path)
    t_load = time.perf_counter() - t0
    sd, sd2 = policy.state_dict(), policy2.state_dict()
    same = {"weights": sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)}
    batch2 = example_batch(policy2, pre2)
    same["pre-processed batch"] = all(torch.equal(v, batch2[k]) for k, v in batch.items() if hasattr(v, "shape"))
    torch.manual_seed(1)
    same["actions"] = torch.equal(chunk, policy2.predict_action_chunk(dict(batch2)))
    print(
        f"[{kind}] save_checkpoint {t_save:.2f}s -> {files}; {type(policy2).__name__}.from_pretrained "
        f"(offline) {t_load:.2f}s: " + ", ".join(f"{k} {'equal' if v else 'DIFFER'}" for k, v in same.items())
    )
    if not all(same.values()):
        raise SystemExit(f"[{kind}] checkpoint round trip failed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="build, run, save and reload each policy")
    ap.add_argument("--only", default="smolvla,pi0,pi05", help="comma-separated: smolvla, pi0, pi05")
    ap.add_argument(
        "--pi-transformers", default=None, help=f"LeRobot's patched transformers (or ${PI_TRANSFORMERS_ENV})"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if not args.check:
        ap.print_help()
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; prove it
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    pi_kinds = [k for k in kinds if k in ("pi0", "pi05")]
    path = pi_transformers_path(args.pi_transformers)
    t0 = time.perf_counter()
    child = None
    if path and pi_kinds and "smolvla" in kinds:
        # two transformers cannot share a process: pi0 / pi0.5 run in a child with the patched one first on
        # PYTHONPATH, at the same time as SmolVLA here; each gets half the cores
        threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([path, *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [
            sys.executable,
            __file__,
            "--check",
            "--only",
            ",".join(pi_kinds),
            "--pi-transformers",
            path,
            "--threads",
            str(threads),
        ]
        child = subprocess.Popen(cmd, env=env)
        kinds, args.threads = ["smolvla"], threads
    elif path and pi_kinds:
        use_pi_transformers(path)  # this process is the pi one: the patched transformers goes first
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for kind in kinds:
        if kind in pi_kinds and not path:
            import transformers

            if not pi_transformers_available():
                print(
                    f"[{kind}] skipped: needs LeRobot's patched transformers (this venv has transformers "
                    f"{transformers.__version__}); give its directory with --pi-transformers DIR or "
                    f"{PI_TRANSFORMERS_ENV}=DIR (LeRobot installs it with "
                    'pip install -e ".[pi]" from a source checkout)'
                )
                continue
        check_policy(kind, path)
    rc = child.wait() if child else 0
    if child or not (path and pi_kinds):
        print(f"done in {time.perf_counter() - t0:.1f}s" + (" (FAILED)" if rc else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Open-loop ablation of one episode: how far each condition moves the action chunk, against the
policy's own sampling noise, and where the instruction tokens' attention goes.

Per keyframe the unablated inputs run twice, with the flow noise of ``seed`` (the reference) and of
``seed + 1`` (the noise floor: the change the policy's own sampling makes); each condition runs
with the noise of ``seed``, so its change comes from the inputs alone. Changes are measured on
motions (``origin="state"``: the chunk minus the current state, for absolute targets) by the
scale-invariant MSE and the direction cosine of :mod:`._faithfulness`.

Attention: during the ``seed`` forward the decoder layers' ``attn.probs`` are captured for the
instruction (text) query rows only; :func:`span_mass` reads, per sample, the mean over heads and
over the sample's own query rows of the probability that lands on each span of
``policy.token_layout(batch)["prefix"]``: ``pad`` (tokens that are not valid), ``sink`` (the first
valid token), ``instruction`` (the text span) and ``image[camera]`` for every camera (empty for a
removed camera that has no tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..tap import TokenSpans, capture, tap_name
from ._ablate_conditions import Condition, apply_condition
from ._ablate_removal import policy_batch
from ._faithfulness import _change

__all__ = ["measure_episode", "resolve_origin", "span_mass"]


def span_mass(probs: Tensor, queries: Tensor, prefix: TokenSpans, cameras: Sequence[str]) -> dict[str, np.ndarray]:
    """Attention mass per span, ``{span: (B,)}`` float64.

    ``probs``: ``(B, H, Q, K)`` the captured query rows over keys whose first ``P`` are the prefix
    (``prefix.shape``); ``queries``: ``(B, Q)`` bool, which of those rows are the sample's own (its
    instruction tokens). A sample's mass on a span is the mean over heads and over its own query
    rows of the summed probability on the span's keys; a sample with no query row gets NaN.
    """
    p = prefix.shape[1]
    row = probs[..., :p].double()  # (B, H, Q, P)
    w = queries.to(row.dtype)[:, None, :, None]  # (B, 1, Q, 1)
    n = w.sum((1, 2, 3))  # (B,) query rows per sample
    per_key = (row * w).sum(2).mean(1) / torch.where(n > 0, n, torch.ones_like(n))[:, None]  # (B, P)
    valid = prefix["valid"].bool()
    sink = torch.zeros_like(valid)
    rows = valid.any(1).nonzero().flatten()
    sink[rows, valid[rows].int().argmax(1)] = True  # the first valid token of each sample
    spans = {"pad": ~valid, "sink": sink, "instruction": prefix["text"].bool()}
    spans |= {f"image[{c}]": prefix[f"image[{c}]"].bool() for c in cameras}
    out = {k: (per_key * m.to(per_key.device, per_key.dtype)).sum(-1) for k, m in spans.items()}
    return {k: torch.where(n > 0, v, torch.full_like(v, float("nan"))).cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def _forward(model: nn.Module, batch: dict, layers: Sequence[int], seed: int, cameras: Sequence[str]):
    """Action chunks ``(B, T, D)`` with the noise of ``seed`` and ``{layer: {span: (B,)}}``."""
    gen = torch.Generator().manual_seed(seed)
    if not layers:
        return model.sample_actions(batch, generator=gen).float().cpu().numpy(), {}
    prefix = model.token_layout(batch)["prefix"]
    text = prefix["text"].bool()
    rows = text.any(0)  # (P,) the union of the samples' query rows: only those leave the model
    taps = {li: tap_name("llm", li, "attn.probs") for li in layers}
    with capture(model, list(taps.values()), queries=dict.fromkeys(taps.values(), rows)) as cap:
        actions = model.sample_actions(batch, generator=gen).float().cpu().numpy()
    mass = {li: span_mass(cap.calls(name)[0].float(), text[:, rows], prefix, cameras) for li, name in taps.items()}
    return actions, mass


def resolve_origin(origin: str, state_dim: int, action_dim: int) -> str:
    """``auto`` -> ``state`` when the state holds the action's dims (absolute targets), else ``none``."""
    if origin not in ("auto", "state", "none"):
        raise ValueError(f"origin={origin!r}: choose auto, state (absolute targets) or none (delta actions)")
    if origin == "auto":
        return "state" if state_dim >= action_dim else "none"
    if origin == "state" and state_dim < action_dim:
        raise ValueError(
            f"origin='state' subtracts the state from {action_dim}-D actions but the state has {state_dim} dims; "
            "pass origin='none' (--origin none) for delta actions"
        )
    return origin


def _lists(d: dict) -> dict:
    """JSON-ready: arrays -> lists, NaN -> None."""
    return {k: _lists(v) if isinstance(v, dict) else [None if not np.isfinite(x) else float(x) for x in v]
            for k, v in d.items()}  # fmt: skip


def measure_episode(
    model: nn.Module,
    feed,
    e: int,
    conditions: Sequence[Condition],
    layers: Sequence[int],
    steps: Sequence[int],
    *,
    seed: int = 0,
    origin: str = "auto",
    other_text: str | None = None,
    batch_size: int = 8,
) -> dict:
    """One episode's changes and attention masses at keyframes ``steps``: ``{"origin", "noise_floor":
    {metric: [per keyframe]}, "change": {condition: {metric: [...]}}, "mass": {condition or "none":
    {"L{l}": {span: [...]}}}}``. ``feed``: an :class:`~policylens.data.EpisodeFeed`; ``other_text``:
    the instruction naming another object (``instruction:other``)."""
    ep, cams = feed.episodes[e], list(model.config.cameras)
    acc: dict = {"noise_floor": {}, "change": {c.name: {} for c in conditions}, "mass": {}}

    def add(where: dict, values: dict) -> None:
        for k, v in values.items():
            if isinstance(v, dict):
                add(where.setdefault(k, {}), v)
            else:
                where.setdefault(k, []).extend(np.atleast_1d(v).tolist())

    n = len(ep)
    for start in range(0, len(steps), batch_size):
        chunk = list(steps[start : start + batch_size])
        raw, state = feed.frames(e, chunk), feed.states(e, chunk)
        texts = [ep.instruction] * len(chunk)
        later = feed.frames(e, [(t + n // 2) % n for t in chunk]) if any(c.kind == "time" for c in conditions) else None
        base = policy_batch(model, raw, texts, state)
        ref, mass = _forward(model, base, layers, seed, cams)
        floor, _ = _forward(model, base, (), seed + 1, cams)
        how = resolve_origin(origin, state.shape[-1], ref.shape[-1])
        add(acc["noise_floor"], _change(ref, floor, state, how))
        add(acc["mass"], {"none": {f"L{li}": m for li, m in mass.items()}})
        for i, cond in enumerate(conditions):
            rng = np.random.default_rng([seed, e, i, start])
            other = None if other_text is None else [other_text] * len(chunk)
            ab = apply_condition(cond, raw, texts, rng, other_time=later, other_texts=other)
            out, mass = _forward(model, policy_batch(model, ab.images, ab.texts, state, ab.removed), layers, seed, cams)
            add(acc["change"][cond.name], _change(ref, out, state, how))
            add(acc["mass"], {cond.name: {f"L{li}": m for li, m in mass.items()}})
    return {"origin": how, "keyframes": list(steps), **_lists(acc)}

"""An independent reference for TinyVLA's bridge features: plain forward hooks on the decoder and
expert layers, an explicit Euler loop over ``model.velocity`` on the model's own time grid
(t_k = 1 - k / N), the noise of sample i drawn from a generator seeded ``seed + i``, positions
read from the token ids, and pooling written as loops in float64. It calls nothing of the
bridge code, ``capture`` or ``pool``."""

from __future__ import annotations

import torch

from policylens.models._tokenizer import ByteTokenizer


def sample_noise(model, indices, seed: int = 0) -> torch.Tensor:
    """``(B, H, A)``: sample i's flow noise from a generator seeded ``seed + i``."""
    return torch.stack(
        [torch.randn(model.noise_shape, generator=torch.Generator().manual_seed(seed + i)) for i in indices]
    )


def euler_records(model, batch, noise, raw_layer: int, query_layer: int):
    """``raw (B, P, D_llm)``, then per flow step the expert layer's output ``(B, 1 + H, D_expert)``
    and the predicted velocity ``(B, H, A)``, all float64, from an explicit N-step Euler loop."""
    n = model.config.flow_steps
    seen: dict[str, list] = {"raw": [], "query": []}

    def keep(key):
        return lambda _m, _a, out: seen[key].append((out[0] if isinstance(out, tuple) else out).detach().double())

    hooks = [
        model.paligemma.language_model.layers[raw_layer].register_forward_hook(keep("raw")),
        model.expert.layers[query_layer].register_forward_hook(keep("query")),
    ]
    velocities = []
    try:
        with torch.no_grad():
            kv, valid = model.run_prefix(batch)
            state = model.normalize("state", batch["state"])
            x = noise.clone()
            for k in range(n):
                t = torch.full((x.shape[0],), 1.0 - k / n)
                v = model.velocity(kv, valid, state, x, t)
                velocities.append(v.double())
                x = x - v / n
    finally:
        for h in hooks:
            h.remove()
    assert len(seen["raw"]) == 1 and len(seen["query"]) == n
    return seen["raw"][0], seen["query"], velocities


def pooled(hidden: torch.Tensor, positions: list[list[int]], mode: str) -> torch.Tensor:
    """Per sample, the rows of ``hidden (B, T, D)`` at its positions: mean / first / last, or
    (``none``) all of them one after another."""
    rows = []
    for i, pos in enumerate(positions):
        if mode == "masked_mean":
            acc = torch.zeros(hidden.shape[-1], dtype=torch.float64)
            for j in pos:
                acc += hidden[i, j]
            rows.append(acc / len(pos))
        elif mode == "first":
            rows.append(hidden[i, pos[0]])
        elif mode == "last":
            rows.append(hidden[i, pos[-1]])
        else:
            rows.append(torch.cat([hidden[i, j] for j in pos]))
    return torch.stack(rows)


def image_positions(batch, shifted: bool = False) -> list[list[int]]:
    """Each sample's image-token positions in the prefix (one to the left with ``shifted``)."""
    out = []
    for ids in batch["input_ids"]:
        pos = [j for j, tok in enumerate(ids.tolist()) if tok == ByteTokenizer.image_id]
        out.append([j - 1 for j in pos] if shifted else pos)
    return out


def query_positions(model, b: int, shifted: bool = False) -> list[list[int]]:
    """The action queries in the suffix ``[state, a_1 .. a_H]`` (one to the left with ``shifted``)."""
    h = model.config.chunk_size
    return [list(range(0, h)) if shifted else list(range(1, h + 1)) for _ in range(b)]


def reference_features(
    model,
    batch,
    indices,
    *,
    raw_layer: int,
    query_layer: int,
    steps,
    pooling: str = "masked_mean",
    action: bool = False,
    raw_shifted: bool = False,
    query_shifted: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """``[C_R ; C_AQ at each of steps ; velocity at each of steps (action)]`` in float64."""
    raw, queries, velocities = euler_records(model, batch, sample_noise(model, indices, seed), raw_layer, query_layer)
    b = raw.shape[0]
    feats = [pooled(raw, image_positions(batch, raw_shifted), pooling)]
    feats += [pooled(queries[k], query_positions(model, b, query_shifted), pooling) for k in steps]
    if action:
        feats += [velocities[k].reshape(b, -1) for k in steps]
    return torch.cat(feats, -1)

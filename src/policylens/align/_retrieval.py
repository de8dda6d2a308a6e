"""Retrieval and similarity metrics of a 2D↔3D feature alignment, batched so no N × N matrix is ever built.

Rows are paired: row i of ``a`` (2D patch features) and row i of ``b`` (3D point features) are a positive
pair. With ``keys`` ((N,) or (N, K) integer ids, e.g. (frame, patch)), rows whose keys are all equal are
positives of each other. Every query is ranked against a *pool* of candidates from the other modality:

- ``"within-frame"``: the rows of the query's own frame (``frames`` ids);
- ``"cross-batch"``: the rows of the query's evaluation batch (rows shuffled with ``seed``, then cut into
  batches of ``batch_size``; the last batch may be shorter).

Top-k is the chance that a positive ranks in the first k, with tied scores broken at random *in
expectation* (a model that outputs a constant scores exactly chance, not 0 or 1). Chance is the same
quantity for random scores: with P positives among C candidates, 1 - C(C-P, k) / C(C, k). Both are
averaged over queries, and so is the pool size C.

Similarities are cosines (rows L2-normalised in float32). The positive / negative distributions are the
(query, candidate) pairs of the 2D→3D pools; AUROC is the Mann–Whitney statistic
U / (n_pos · n_neg) with ties counted one half, computed exactly: positives are sorted once and every
chunk of negatives is counted against them with ``searchsorted``. Pools are padded into (pools, P) index
blocks and scored in chunks of at most ``chunk_elems`` similarities (one giant pool is split by query rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "POOLS",
    "AlignmentReport",
    "RetrievalScores",
    "RowSplit",
    "SimilarityStats",
    "evaluate_alignment",
    "held_out_rows",
]

POOLS = ("within-frame", "cross-batch")
DIRECTIONS = ("2d->3d", "3d->2d")


@dataclass(frozen=True)
class RetrievalScores:
    """Top-k hit rates of one retrieval direction, beside their chance levels (fractions in [0, 1])."""

    direction: str
    topk: dict[int, float]
    chance: dict[int, float]
    pool_size: float  # mean number of candidates per query
    n_queries: int


@dataclass(frozen=True)
class SimilarityStats:
    """Cosine similarities of positive vs negative (query, candidate) pairs, as exact histograms over [-1, 1]."""

    n_pos: int
    n_neg: int
    pos_mean: float
    neg_mean: float
    gap: float  # pos_mean - neg_mean
    auroc: float  # P(pos > neg) + P(pos == neg) / 2; NaN without negatives
    bin_edges: tuple[float, ...]
    pos_counts: tuple[int, ...]
    neg_counts: tuple[int, ...]


@dataclass(frozen=True)
class AlignmentReport:
    """What ``evaluate_alignment`` measured for one pool kind; ``to_dict()`` is JSON-ready."""

    pool: str
    batch_size: int | None  # None for within-frame pools
    n_rows: int
    retrieval: dict[str, RetrievalScores]  # keyed by DIRECTIONS
    similarity: SimilarityStats

    @property
    def pool_size(self) -> float:
        return self.retrieval["2d->3d"].pool_size

    def summary(self) -> str:
        """One line: pool, chance, top-k both ways, similarity gap and AUROC."""
        ks = sorted(self.retrieval["2d->3d"].topk)
        fwd, bwd, s = self.retrieval["2d->3d"], self.retrieval["3d->2d"], self.similarity
        chance = " ".join(f"top-{k} {fwd.chance[k]:.2%}" for k in ks)
        parts = [f"{self.pool} pool={self.pool_size:.1f} (chance {chance})"]
        for name, r in (("2D→3D", fwd), ("3D→2D", bwd)):
            parts.append(f"{name} " + " ".join(f"top-{k} {r.topk[k]:.2%}" for k in ks))
        parts.append(f"cos pos {s.pos_mean:.3f} neg {s.neg_mean:.3f} gap {s.gap:.3f} AUROC {s.auroc:.3f}")
        return " | ".join(parts) + f" (n={self.n_rows} rows)"

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        return asdict(self)


class RowSplit(NamedTuple):
    """Row indices (int64) of the training and the held-out evaluation episodes."""

    train: Tensor
    eval: Tensor


def held_out_rows(episode_ids, *, train_episodes: Sequence[int], eval_episodes: Sequence[int]) -> RowSplit:
    """Rows of ``train_episodes`` and of ``eval_episodes`` (by per-row ``episode_ids``); the two must not share
    an episode, and every listed episode must own rows."""
    ep = torch.as_tensor(episode_ids).reshape(-1)
    train, evl = [int(e) for e in train_episodes], [int(e) for e in eval_episodes]
    overlap = sorted(set(train) & set(evl))
    if overlap:
        raise ValueError(
            f"train_episodes and eval_episodes share {len(overlap)} episode(s) {overlap[:10]}; a held-out "
            "evaluation needs disjoint episodes: remove them from one of the two lists"
        )
    if not evl:
        raise ValueError("eval_episodes is empty; list at least one held-out episode id")
    present = set(ep.tolist())
    missing = sorted(set(train + evl) - present)
    if missing:
        raise ValueError(
            f"episode id(s) {missing[:10]} have no rows in episode_ids; check the ids (got {len(present)})"
        )
    rows = torch.arange(ep.numel())
    return RowSplit(
        rows[torch.isin(ep, torch.tensor(train, dtype=ep.dtype))],
        rows[torch.isin(ep, torch.tensor(evl, dtype=ep.dtype))],
    )


def evaluate_alignment(
    a,
    b,
    *,
    pool: str = "cross-batch",
    batch_size: int = 256,
    frames=None,
    keys=None,
    ks: Sequence[int] = (1, 5),
    seed: int | None = 0,
    bins: int = 100,
    chunk_elems: int = 1 << 22,
) -> AlignmentReport:
    """Top-k retrieval both ways, pool size, chance, and positive/negative cosine statistics.

    a (N, D) 2D features; b (N, D) 3D features (row i of each is a pair); frames (N,) ids, required for
    ``pool="within-frame"``; keys (N,) or (N, K) integer ids, rows with equal keys are all positives;
    seed shuffles rows before cutting cross-batch pools (None keeps the given order).
    """
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape (paired rows, one feature width); "
            "map one modality into the other first, e.g. with fit_ridge"
        )
    n = a.shape[0]
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is unknown; choose one of {POOLS}")
    ks = _check_ks(ks)
    for name, v in (("batch_size", batch_size), ("bins", bins), ("chunk_elems", chunk_elems)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    group = _groups(keys, n, a.device)
    if pool == "within-frame":
        if frames is None:
            raise ValueError('pool="within-frame" needs frames: one frame id per row, shape (N,)')
        pool_ids = _ids(frames, n, "frames", a.device)
    else:
        order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        pool_ids = torch.empty(n, dtype=torch.long)
        pool_ids[order] = torch.arange(n) // batch_size
        pool_ids = pool_ids.to(a.device)
    idx = _pool_index(pool_ids)  # (pools, P), -1 = padding
    positives: list[Tensor] = []  # the 2D→3D pass also collects positive cosines for the AUROC pass
    retrieval = {
        "2d->3d": _retrieval(_scan(a, b, group, idx, chunk_elems), ks, "2d->3d", positives),
        "3d->2d": _retrieval(_scan(b, a, group, idx, chunk_elems), ks, "3d->2d"),
    }
    similarity = _similarity(torch.sort(torch.cat(positives))[0], _scan(a, b, group, idx, chunk_elems), bins)
    return AlignmentReport(pool, batch_size if pool == "cross-batch" else None, n, retrieval, similarity)


def _features(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) feature matrix, got shape {tuple(x.shape)}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~torch.isfinite(x)).sum())} non-finite values; drop or fix those rows")
    zero = (x.norm(dim=1) == 0).nonzero().flatten()
    if zero.numel():
        raise ValueError(
            f"{name} has {zero.numel()} all-zero row(s) (first: {zero[:5].tolist()}); cosine similarity is undefined "
            "for them: drop those rows (and their pairs) before evaluating"
        )
    return F.normalize(x, dim=1)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints such as (1, 5), got {ks!r}")
    return tuple(sorted(set(ks)))


def _ids(x, n: int, name: str, device) -> Tensor:
    x = torch.as_tensor(x, device=device)
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must be integer ids of shape ({n},), got {x.dtype} {tuple(x.shape)}")
    return x.long()


def _groups(keys, n: int, device) -> Tensor:
    """(N,) group id per row: rows with equal keys share one; without keys every row is its own group."""
    if keys is None:
        return torch.arange(n, device=device)
    k = torch.as_tensor(keys, device=device)
    k = k.reshape(-1, 1) if k.dim() == 1 else k
    if k.dtype.is_floating_point or k.dtype == torch.bool or k.dim() != 2 or k.shape[0] != n:
        raise ValueError(
            f"keys must be integer ids of shape ({n},) or ({n}, K), e.g. (frame, patch); got "
            f"{k.dtype} {tuple(torch.as_tensor(keys).shape)}"
        )
    return torch.unique(k, dim=0, return_inverse=True)[1]


def _pool_index(pool_ids: Tensor) -> Tensor:
    """(pools, P) row indices of each pool, padded with -1 (P = the largest pool)."""
    order = torch.argsort(pool_ids, stable=True)
    counts = torch.unique_consecutive(pool_ids[order], return_counts=True)[1]
    starts = torch.cumsum(counts, 0) - counts
    pool = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    slot = torch.arange(order.numel(), device=order.device) - starts[pool]
    idx = torch.full((counts.numel(), int(counts.max())), -1, dtype=torch.long, device=order.device)
    idx[pool, slot] = order
    return idx


def _plan(n_pools: int, p: int, chunk_elems: int) -> tuple[int, int]:
    """(pools per chunk, query rows per chunk) so one chunk scores at most max(chunk_elems, P) pairs."""
    if p * p <= chunk_elems:
        return min(n_pools, chunk_elems // (p * p)), p
    return 1, max(1, chunk_elems // p)


def _scan(queries: Tensor, cands: Tensor, group: Tensor, idx: Tensor, chunk_elems: int) -> Iterator[tuple]:
    """Yield (S, pos, valid), each (n, P): cosines of n queries against their pool, the positive mask, and the
    candidate mask (None when no candidate is padding; padded entries of S are -inf, never in pos)."""
    n_pools, p = idx.shape
    c, q = _plan(n_pools, p, chunk_elems)
    for p0 in range(0, n_pools, c):
        cidx = idx[p0 : p0 + c]  # (c, P)
        cvalid = cidx >= 0
        padded = not bool(cvalid.all())
        cand, cg = cands[cidx.clamp(min=0)], group[cidx.clamp(min=0)]  # (c, P, D), (c, P)
        for r0 in range(0, p, q):
            qidx = cidx[:, r0 : r0 + q]  # (c, q)
            s = queries[qidx.clamp(min=0)] @ cand.transpose(1, 2)  # (c, q, P)
            pos = group[qidx.clamp(min=0)][..., None] == cg[:, None, :]  # (c, q, P)
            valid = None
            if padded:
                valid = cvalid[:, None, :].expand_as(s)
                s, pos = s.masked_fill(~valid, float("-inf")), pos & valid
                rows = qidx >= 0
                s, pos, valid = s[rows], pos[rows], valid[rows]
            yield s.reshape(-1, p), pos.reshape(-1, p), (None if valid is None else valid.reshape(-1, p))


def _hit_prob(g: Tensor, t: Tensor, p: Tensor, k: int) -> Tensor:
    """P(a positive is in the top k) when g negatives score above the best positive and t negatives tie with
    the p positives at that score, the tie broken uniformly: 1 - C(t, k-g) / C(t+p, k-g)."""
    m = k - g
    miss = torch.ones_like(g, dtype=torch.float64)
    for i in range(k):
        factor = (t - i).clamp(min=0).double() / (t + p - i).clamp(min=1).double()
        miss = torch.where(i < m, miss * factor, miss)
    return torch.where(m > 0, 1.0 - miss, torch.zeros_like(miss))


def _retrieval(chunks, ks: tuple[int, ...], direction: str, positives: list | None = None) -> RetrievalScores:
    """Expected top-k hits and chance over all queries; appends each chunk's positive cosines to ``positives``."""
    hits = dict.fromkeys(ks, 0.0)
    chance = dict.fromkeys(ks, 0.0)
    size, n = 0, 0
    for s, pos, valid in chunks:
        best = s.masked_fill(~pos, float("-inf")).amax(1, keepdim=True)  # (n, 1)
        g = torch.count_nonzero(s > best, dim=1)  # only negatives can beat the best positive; padding is -inf
        at = s == best
        p_tied, n_pos = torch.count_nonzero(at & pos, dim=1), torch.count_nonzero(pos, dim=1)
        t = torch.count_nonzero(at, dim=1) - p_tied
        n_cand = torch.full_like(n_pos, s.shape[1]) if valid is None else torch.count_nonzero(valid, dim=1)
        for k in ks:
            hits[k] += float(_hit_prob(g, t, p_tied, k).sum())
            chance[k] += float(_hit_prob(torch.zeros_like(n_pos), n_cand - n_pos, n_pos, k).sum())
        size += int(n_cand.sum())
        n += s.shape[0]
        if positives is not None:
            positives.append(s[pos])
    return RetrievalScores(
        direction, {k: v / n for k, v in hits.items()}, {k: v / n for k, v in chance.items()}, size / n, n
    )


def _similarity(pos: Tensor, chunks, bins: int) -> SimilarityStats:
    """Mann–Whitney U of the sorted positive cosines ``pos`` against every chunk's negatives, plus means and
    histograms. Each negative v adds #(pos > v) + #(pos == v) / 2, found with one searchsorted on the unique
    positives."""
    uniq, counts = torch.unique_consecutive(pos, return_counts=True)
    below = torch.cumsum(counts, 0) - counts  # positives strictly below each unique value
    u, neg_sum, n_neg = 0.0, 0.0, 0
    neg_hist = torch.zeros(bins, dtype=torch.float64)
    for s, is_pos, valid in chunks:
        v = s[~is_pos if valid is None else valid & ~is_pos]
        i = torch.searchsorted(uniq, v).clamp(max=uniq.numel() - 1)
        tie = torch.where(uniq[i] == v, counts[i], 0)
        lo = torch.where(uniq[i] >= v, below[i], pos.numel())  # #(pos < v)
        u += float((pos.numel() - lo).double().sum() - 0.5 * tie.double().sum())
        neg_sum += float(v.double().sum())
        n_neg += v.numel()
        neg_hist += torch.histc(v.clamp(-1, 1), bins, -1, 1).double().cpu()
    pos_hist = torch.histc(pos.clamp(-1, 1), bins, -1, 1).double().cpu()
    pos_mean = float(pos.double().mean())
    neg_mean = neg_sum / n_neg if n_neg else float("nan")
    auroc = u / (pos.numel() * n_neg) if n_neg else float("nan")
    edges = tuple(torch.linspace(-1, 1, bins + 1, dtype=torch.float64).tolist())
    return SimilarityStats(
        pos.numel(),
        n_neg,
        pos_mean,
        neg_mean,
        pos_mean - neg_mean,
        auroc,
        edges,
        tuple(int(x) for x in pos_hist.tolist()),
        tuple(int(x) for x in neg_hist.tolist()),
    )

"""Retrieval / similarity metrics: identical, independent and hand-made features with known answers, and
a brute-force reference on the full similarity matrix for the batched path."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from policylens.align._retrieval import POOLS, _hit_prob, _plan, evaluate_alignment, held_out_rows


def _gauss(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pool", POOLS)
def test_identical_features_are_perfect(pool):
    a = _gauss(300, 16, 0)
    frames = torch.arange(300) // 30
    r = evaluate_alignment(a, a.clone(), pool=pool, frames=frames, batch_size=64)
    for d in ("2d->3d", "3d->2d"):
        assert r.retrieval[d].topk == {1: 1.0, 5: 1.0}
    assert r.similarity.auroc == 1.0
    assert r.similarity.pos_mean == pytest.approx(1.0, abs=1e-6)
    assert r.similarity.n_pos == 300


def test_independent_features_score_chance():
    n, pool = 3000, 100
    r = evaluate_alignment(_gauss(n, 32, 1), _gauss(n, 32, 2), batch_size=pool)
    for d in ("2d->3d", "3d->2d"):
        s = r.retrieval[d]
        assert s.pool_size == pool
        for k in (1, 5):
            c = k / pool
            assert s.chance[k] == pytest.approx(c)
            tol = 5 * math.sqrt(c * (1 - c) / n)  # 5 standard errors of a mean of n Bernoulli(c) hits
            assert abs(s.topk[k] - c) < tol, (d, k, s.topk[k])
    auroc_se = math.sqrt((n + n * (pool - 1) + 1) / (12 * n * n * (pool - 1)))  # Mann–Whitney null SE
    assert abs(r.similarity.auroc - 0.5) < 5 * auroc_se
    assert abs(r.similarity.gap) < 0.02


def test_hand_made_4x4():
    # a = identity, so S[i, j] = b_j[i] / |b_j|; 3-4-5 rows make every cosine exact in float32.
    a = torch.eye(4)
    b = torch.tensor([[4.0, 3, 0, 0], [0, 3, 4, 0], [0, 0, 3, 4], [3, 0, 0, 4]])
    # S rows (2D queries): [.8 0 0 .6] [.6 .6 0 0] [0 .8 .6 0] [0 0 .8 .8]; the diagonal is positive.
    r = evaluate_alignment(a, b, pool="within-frame", frames=torch.zeros(4, dtype=torch.long), ks=(1, 2))
    fwd, bwd = r.retrieval["2d->3d"], r.retrieval["3d->2d"]
    assert fwd.topk[1] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)  # q1, q3 tie with one negative -> 1/2
    assert fwd.topk[2] == 1.0
    assert bwd.topk[1] == pytest.approx((1 + 0 + 0 + 1) / 4)  # columns: b1, b2 have one negative above
    assert bwd.topk[2] == 1.0
    assert fwd.chance == {1: pytest.approx(0.25), 2: pytest.approx(0.5)}
    s = r.similarity
    assert (s.n_pos, s.n_neg) == (4, 12)
    # positives .8 .6 .6 .8; negatives 0 x8, .6 x2, .8 x2 -> U = 2*(10 + 1) + 2*(8 + 1) = 40 of 48 pairs
    assert s.auroc == pytest.approx(40 / 48)
    assert s.pos_mean == pytest.approx(0.7)
    assert s.neg_mean == pytest.approx(2.8 / 12)
    assert s.gap == pytest.approx(0.7 - 2.8 / 12)


def _brute(a, b, pools, groups, ks):
    """Full N x N similarity matrix with masks; no ties in continuous data, so hit = (#neg above best pos) < k."""
    s = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T
    same_pool = pools[:, None] == pools[None, :]
    pos = same_pool & (groups[:, None] == groups[None, :])
    neg = same_pool & ~pos
    out = {}
    for name, m, p, q in (("2d->3d", s, pos, neg), ("3d->2d", s.T, pos.T, neg.T)):
        best = m.masked_fill(~p, -2).amax(1, keepdim=True)
        above = ((m > best) & q).sum(1)
        out[name] = {k: (above < k).double().mean().item() for k in ks}
    pv, nv = s[pos], s[neg]
    u = sum(float((pv > v).sum() + 0.5 * (pv == v).sum()) for v in nv)
    return out, u / (pv.numel() * nv.numel())


@pytest.mark.parametrize("chunk_elems", [1, 50, 1 << 22])
def test_matches_brute_force_with_groups_and_chunks(chunk_elems):
    n = 120
    a, b = _gauss(n, 8, 3), _gauss(n, 8, 4)
    b = b + 2 * a  # correlated, so scores are neither perfect nor chance
    frames = torch.arange(n) // 20
    keys = torch.stack([frames, torch.arange(n) % 20 // 3], 1)  # (frame, patch) with 3 rows per patch
    for pool in POOLS:
        r = evaluate_alignment(
            a, b, pool=pool, frames=frames, keys=keys, batch_size=50, seed=None, ks=(1, 3), chunk_elems=chunk_elems
        )
        pools = frames if pool == "within-frame" else torch.arange(n) // 50
        groups = keys[:, 0] * 100 + keys[:, 1]
        want, auroc = _brute(a, b, pools, groups, (1, 3))
        for d in want:
            assert r.retrieval[d].topk == pytest.approx(want[d], abs=1e-12)
        assert r.similarity.auroc == pytest.approx(auroc, abs=1e-12)


def test_auroc_counts_ties_as_half():
    # few distinct values -> many pos/neg ties; brute-force pair count is the reference
    a = torch.randint(0, 3, (60, 3), generator=torch.Generator().manual_seed(5)).float() + 0.5
    b = torch.randint(0, 3, (60, 3), generator=torch.Generator().manual_seed(6)).float() + 0.5
    r = evaluate_alignment(a, b, batch_size=60)
    s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    pos, neg = s.diagonal(), s[~torch.eye(60, dtype=torch.bool)]
    u = sum(float((pos > v).sum() + 0.5 * (pos == v).sum()) for v in neg)
    assert r.similarity.auroc == pytest.approx(u / (60 * 60 * 59), abs=1e-12)
    assert (pos[:, None] == neg[None, :]).any()  # the case really has ties


def test_constant_features_score_exactly_chance():
    a = torch.ones(40, 4)
    r = evaluate_alignment(a, a, batch_size=10)
    for d in ("2d->3d", "3d->2d"):
        assert r.retrieval[d].topk == pytest.approx(r.retrieval[d].chance)
    assert r.retrieval["2d->3d"].chance == pytest.approx({1: 0.1, 5: 0.5})
    assert r.similarity.auroc == 0.5


def test_multi_positive_groups():
    base = _gauss(50, 8, 7)
    a = base.repeat_interleave(2, 0)  # rows 2g and 2g+1 identical
    keys = torch.arange(100) // 2
    plain = evaluate_alignment(a, a, batch_size=100, seed=None)
    grouped = evaluate_alignment(a, a, batch_size=100, seed=None, keys=keys)
    assert plain.retrieval["2d->3d"].topk[1] == pytest.approx(0.5)  # the twin ties as a negative
    assert grouped.retrieval["2d->3d"].topk[1] == 1.0
    assert grouped.retrieval["2d->3d"].chance[1] == pytest.approx(2 / 100)  # two positives per pool of 100
    assert grouped.similarity.n_pos == 200
    assert grouped.similarity.auroc == 1.0
    # 2-column keys (frame, patch) are the same as the flattened id
    pair_keys = torch.stack([keys // 10, keys % 10], 1)
    assert evaluate_alignment(a, a, batch_size=100, keys=pair_keys).to_dict() == grouped.to_dict()


def test_pool_sizes_within_frame_vs_cross_batch():
    a, b = _gauss(200, 8, 8), _gauss(200, 8, 9)
    frames = torch.arange(200) // 10
    within = evaluate_alignment(a, b, pool="within-frame", frames=frames)
    cross = evaluate_alignment(a, b, pool="cross-batch", batch_size=64)
    assert within.pool_size == 10
    assert within.batch_size is None
    assert within.retrieval["3d->2d"].chance[1] == pytest.approx(0.1)
    assert cross.pool_size == pytest.approx((3 * 64 * 64 + 8 * 8) / 200)  # batches of 64, 64, 64 and 8
    assert cross.batch_size == 64
    assert within.similarity.n_neg == 200 * 9
    assert cross.similarity.n_neg == 3 * 64 * 63 + 8 * 7
    line = cross.summary()
    assert "cross-batch pool=61.8" in line
    assert "chance top-1" in line
    assert "AUROC" in line
    json.dumps(cross.to_dict())


def test_chunk_plan_never_exceeds_budget():
    for n_pools, p, budget in [(1, 100_000, 1 << 22), (500, 196, 1 << 22), (3, 7, 1), (10, 10, 1000)]:
        c, q = _plan(n_pools, p, budget)
        assert c * q * p <= max(budget, p)


def test_hit_prob_formula():
    g, t, p = torch.tensor([0, 1, 0, 6]), torch.tensor([3, 2, 0, 0]), torch.tensor([1, 2, 1, 1])
    # 1 of 4 tied; 1 above then 1 of 2 positives in 4 tied; unique best; 6 above
    assert _hit_prob(g, t, p, 1).tolist() == pytest.approx([0.25, 0.0, 1.0, 0.0])
    assert _hit_prob(g, t, p, 2).tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0])


def test_held_out_rows():
    ep = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    split = held_out_rows(ep, train_episodes=[0, 1], eval_episodes=[3, 2])
    assert split.train.tolist() == [0, 1, 2, 3]
    assert split.eval.tolist() == [4, 5, 6]
    with pytest.raises(ValueError, match=r"share 1 episode\(s\) \[1\]"):
        held_out_rows(ep, train_episodes=[0, 1], eval_episodes=[1, 2])
    with pytest.raises(ValueError, match="no rows"):
        held_out_rows(ep, train_episodes=[0], eval_episodes=[9])


def test_errors_name_the_parameter():
    a = _gauss(10, 4, 0)
    with pytest.raises(ValueError, match="pool='batch' is unknown"):
        evaluate_alignment(a, a, pool="batch")
    with pytest.raises(ValueError, match="needs frames"):
        evaluate_alignment(a, a, pool="within-frame")
    with pytest.raises(ValueError, match="same shape"):
        evaluate_alignment(a, a[:, :3])
    with pytest.raises(ValueError, match="all-zero row"):
        evaluate_alignment(torch.zeros(10, 4), a)
    with pytest.raises(ValueError, match="keys must be integer ids"):
        evaluate_alignment(a, a, keys=torch.zeros(10))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_alignment(a, a, batch_size=0)

"""BAC schedules: DP against brute force, uniform, Bubbling Union on a hand-made example."""

import itertools

import numpy as np
import pytest

from policylens.accel import (
    bubbling_union,
    optimal_update_steps,
    reuse_error_scores,
    segment_scores,
    steps_to_mask,
    uniform_update_steps,
)


def _total(sim, steps):
    bounds = [*steps, sim.shape[0]]
    return sum(sim[a, a:b].sum() for a, b in itertools.pairwise(bounds))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("k", "s"), [(6, 1), (6, 3), (8, 4), (9, 9), (7, 2)])
def test_dp_matches_brute_force(seed, k, s):
    K, S = k, s
    rng = np.random.default_rng(seed)
    sim = rng.uniform(-1, 1, size=(K, K))
    for maximize in (True, False):
        sign = 1 if maximize else -1
        best = max(sign * _total(sim, [0, *c]) for c in itertools.combinations(range(1, K), S - 1))
        got = optimal_update_steps(sim, S, maximize=maximize)
        assert got[0] == 0 and len(got) == S and got == sorted(set(got))
        assert sign * _total(sim, got) == pytest.approx(best, abs=1e-9)


def test_segment_scores():
    sim = np.arange(16, dtype=float).reshape(4, 4)
    sc = segment_scores(sim)
    assert sc[1, 3] == 5 + 6 + 7 and sc[2, 2] == 10 and np.isneginf(sc[3, 1])


def test_dp_prefers_updates_where_features_change():
    # features constant on steps 0-4 and 5-9: one update per plateau is optimal
    f = np.array([0] * 5 + [1] * 5)
    sim = (f[:, None] == f[None, :]).astype(float)
    assert optimal_update_steps(sim, 2) == [0, 5]


def test_uniform():
    assert uniform_update_steps(10, every=3) == [0, 3, 6, 9]
    assert uniform_update_steps(100, num_updates=10) == list(range(0, 100, 10))
    assert uniform_update_steps(10, every=1) == list(range(10))
    with pytest.raises(ValueError, match="exactly one"):
        uniform_update_steps(10)
    with pytest.raises(ValueError, match="num_updates=11"):
        uniform_update_steps(10, num_updates=11)


def test_bubbling_union_hand_example():
    # layer 0: attn0, ffn0; layer 1: attn1, ffn1; layer 2: ffn2
    sched = {"attn0": [0, 5], "ffn0": [0, 2], "attn1": [0, 7], "ffn1": [0, 3], "ffn2": [0, 8]}
    layers = {"attn0": 0, "ffn0": 0, "attn1": 1, "ffn1": 1, "ffn2": 2}
    kinds = {"attn0": "attn", "ffn0": "ffn", "attn1": "attn", "ffn1": "ffn", "ffn2": "ffn"}
    scores = {"attn0": 0.1, "ffn0": 0.2, "attn1": 0.9, "ffn1": 0.05, "ffn2": 0.3}
    out = bubbling_union(sched, layers, kinds, scores, n_bu=2)
    assert out["attn1"] == [0, 3, 7, 8]  # + ffn1 (same layer) + ffn2 (deeper); not ffn0
    assert out["ffn2"] == [0, 8]  # only itself is at its depth or deeper
    assert out["attn0"] == [0, 5] and out["ffn0"] == [0, 2] and out["ffn1"] == [0, 3]
    assert bubbling_union(sched, layers, kinds, scores, n_bu=0) == sched


def test_reuse_error_scores_ignore_diagonal():
    m = np.array([[0.0, 2.0], [4.0, 0.0]])
    assert reuse_error_scores({"b": m})["b"] == 3.0


def test_mask_requires_step_zero():
    assert steps_to_mask([0, 2], 4) == [True, False, True, False]
    with pytest.raises(ValueError, match="step 0"):
        steps_to_mask([1, 2], 4)
    with pytest.raises(ValueError, match="outside"):
        steps_to_mask([0, 4], 4)

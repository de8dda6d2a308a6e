"""Episode-level statistics: known answers for bootstrap, paired tests, Holm and the table."""

import subprocess
import sys

import numpy as np
import pytest

from policylens.attention._stats import (
    BootstrapCI,
    PairedDiff,
    bootstrap_ci,
    episode_counts,
    holm,
    paired_bootstrap_diff,
    summary_table,
    wilson_interval,
)


def test_bootstrap_of_a_constant_is_degenerate():
    est, lo, hi = bootstrap_ci([np.full(7, 0.3), np.full(2, 0.3), [0.3]], rng=0)
    assert est == lo == hi == pytest.approx(0.3)
    assert lo == hi


def test_resampling_is_over_episodes_not_frames():
    long_ep = np.ones(1000)  # one episode with many frames ...
    r = bootstrap_ci([long_ep, [0.0], [0.0], [0.0]], rng=0)
    assert r.estimate == pytest.approx(0.25)  # ... counts once: frame pooling would give 0.997
    # resampled units are episodes: every bootstrap mean is k/4 for an integer k
    assert r.low * 4 == pytest.approx(round(r.low * 4)) and r.high * 4 == pytest.approx(round(r.high * 4))
    assert 0.0 <= r.low < 0.25 < r.high <= 1.0


def test_bootstrap_inputs_forms_agree_and_interval_covers():
    rng = np.random.default_rng(0)
    per_ep = rng.normal(1.0, 1.0, size=(40, 5))  # (episodes, frames)
    a = bootstrap_ci(per_ep, rng=1)
    b = bootstrap_ci(list(per_ep), rng=1)
    c = bootstrap_ci(per_ep.mean(1), rng=1)
    assert a == b == c and isinstance(a, BootstrapCI)
    half = 1.96 * per_ep.mean(1).std(ddof=1) / np.sqrt(40)  # normal-theory half-width
    assert a.high - a.low == pytest.approx(2 * half, rel=0.2)
    med = bootstrap_ci(per_ep, stat=np.median, rng=1)
    assert med.estimate == pytest.approx(np.median(per_ep.mean(1)))


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="needs at least 2"):
        bootstrap_ci([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"values\[1\] must hold .* drop NaN"):
        bootstrap_ci([[1.0], [np.nan]])
    with pytest.raises(ValueError, match=r"ci must be a coverage in \(0, 1\), got 95"):
        bootstrap_ci([1.0, 2.0], ci=95)


def test_paired_constant_shift_exact_p():
    b = [np.arange(3.0), np.arange(5.0), [7.0], [1.0, 2.0], [4.0]]
    a = [np.asarray(x) + 0.5 for x in b]
    r = paired_bootstrap_diff(a, b, rng=0)
    assert isinstance(r, PairedDiff)
    assert r.diff == pytest.approx(0.5) and r.low == pytest.approx(0.5) and r.high == pytest.approx(0.5)
    # sign flips of five equal differences: only all-plus and all-minus reach |0.5| -> 2 / 32
    assert r.p_value == pytest.approx(2 / 32)


def test_paired_no_difference_and_random_permutations():
    rng = np.random.default_rng(0)
    x = list(rng.random((30, 4)))
    same = paired_bootstrap_diff(x, x, rng=0)
    assert same.diff == 0.0 and same.p_value == 1.0
    y = [v + 1.0 + rng.normal(0, 0.1, 4) for v in x]  # 2**30 > n_perm: random flips, p = 1 / (n_perm + 1)
    far = paired_bootstrap_diff(y, x, n_perm=999, rng=0)
    assert far.p_value == pytest.approx(1 / 1000) and far.low > 0.9
    with pytest.raises(ValueError, match="a_per_episode has 30 episodes but b_per_episode has 29"):
        paired_bootstrap_diff(x, x[:-1])


def test_holm_matches_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.2]), [0.2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        holm([0.1, 1.5])


def test_summary_table_states_n():
    ci = BootstrapCI(0.5, 0.4, 0.61)
    rows = [
        {"layer": 12, "mass": ci, "n_episodes": 20, "n_frames": 800},
        {"layer": 18, "diff": PairedDiff(0.1, 0.02, 0.2, 0.004), "n_episodes": 20, "n_frames": 790},
    ]
    assert summary_table(rows).splitlines() == [
        "| layer | mass | diff | n episodes | n frames |",
        "|---|---|---|---:|---:|",
        "| 12 | 0.500 [0.400, 0.610] | — | 20 | 800 |",
        "| 18 | — | +0.100 [+0.020, +0.200], p=0.004 | 20 | 790 |",
    ]
    with pytest.raises(ValueError, match=r"rows\[0\]\['n_frames'\] must be a non-negative int"):
        summary_table([{"mass": 0.5, "n_episodes": 3}])


def test_episode_counts():
    assert episode_counts([np.ones(3), [1.0], np.ones(6)]) == (3, 10)


def test_wilson_reuses_the_sim_implementation():
    from policylens.sim.pybullet import wilson_interval as sim_wilson

    assert wilson_interval(7, 20) == sim_wilson(7, 20)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # textbook value for 0/10
    with pytest.raises(ValueError, match="0 <= successes <= n, got successes=11, n=10"):
        wilson_interval(11, 10)


def test_importing_stats_does_not_load_pybullet():
    code = "import sys, policylens.attention._stats; print('pybullet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

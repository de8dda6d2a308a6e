"""Ridge baseline: the closed form against torch.linalg.lstsq / pinv / a direct solve, λ selection on held-out
episodes, and a known linear map recovered exactly (top-1 = 1)."""

import pytest
import torch

from policylens.align._ridge import _val_split, fit_ridge, ridge_baseline


def _data(n, d_in, d_out, seed, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    m = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
    c = torch.randn(d_out, generator=g, dtype=torch.float64)
    return x, x @ m + c + noise * torch.randn(n, d_out, generator=g, dtype=torch.float64), m, c


@pytest.mark.parametrize(("n", "d_in"), [(80, 12), (10, 30)])  # primal (N >= D) and dual (N < D)
@pytest.mark.parametrize("lam", [0.1, 5.0])
def test_matches_augmented_lstsq_and_direct_formula(n, d_in, lam):
    x, y, _, _ = _data(n, d_in, 5, 0, noise=0.3)
    fit = fit_ridge(x, y, lam=lam)
    xc, yc = x - x.mean(0), y - y.mean(0)
    # ridge = least squares on [Xc; sqrt(λ) I] w = [Yc; 0]
    aug_x = torch.cat([xc, lam**0.5 * torch.eye(d_in, dtype=x.dtype)])
    aug_y = torch.cat([yc, torch.zeros(d_in, 5, dtype=x.dtype)])
    ref = torch.linalg.lstsq(aug_x, aug_y).solution
    direct = torch.linalg.solve(xc.T @ xc + lam * torch.eye(d_in, dtype=x.dtype), xc.T @ yc)
    torch.testing.assert_close(fit.weight, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fit.weight, direct, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fit.bias, y.mean(0) - x.mean(0) @ ref, rtol=1e-9, atol=1e-9)
    assert fit.lam == lam
    assert fit.val_mse == {}


def test_lam_zero_is_least_squares_with_intercept():
    x, y, _, _ = _data(60, 8, 4, 1, noise=0.5)
    fit = fit_ridge(x, y, lam=0.0)
    ones = torch.ones(60, 1, dtype=x.dtype)
    sol = torch.linalg.lstsq(torch.cat([x, ones], 1), y).solution
    torch.testing.assert_close(fit.weight, sol[:8], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(fit.bias, sol[8], rtol=1e-8, atol=1e-8)


def test_lam_zero_rank_deficient_is_minimum_norm():
    x, y, _, _ = _data(40, 6, 3, 2)
    x = torch.cat([x, x[:, :2]], 1)  # duplicated columns: XᵀX is singular
    fit = fit_ridge(x, y, lam=0.0)
    xc, yc = x - x.mean(0), y - y.mean(0)
    torch.testing.assert_close(fit.weight, torch.linalg.pinv(xc) @ yc, rtol=1e-7, atol=1e-7)


def test_recovers_known_map_and_retrieves_perfectly():
    x, y, m, c = _data(400, 16, 16, 3)
    fit = fit_ridge(x, y, lam=0.0)
    torch.testing.assert_close(fit.weight, m, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(fit.bias, c, rtol=1e-8, atol=1e-8)
    a, b = x.float(), y.float()
    base = ridge_baseline(a[:300], b[:300], a[300:], b[300:], batch_size=50)
    assert set(base.reports) == {"ridge 2d->3d", "ridge 3d->2d"}
    for rep in base.reports.values():
        for d in ("2d->3d", "3d->2d"):
            assert rep.retrieval[d].topk[1] == 1.0
        assert rep.similarity.auroc == 1.0
    assert base.a_to_b.lam == min(base.a_to_b.val_mse)  # noiseless: the smallest λ validates best
    assert base.a_to_b(a[:2]).dtype == torch.float32


def test_lam_chosen_on_validation_episodes():
    x, y, _, _ = _data(200, 30, 4, 4, noise=3.0)
    episodes = torch.arange(200) // 20
    lams = (1e-3, 1.0, 1e2, 1e4)
    fit = fit_ridge(x, y, lams=lams, episodes=episodes, val_fraction=0.3)
    assert set(fit.val_mse) == set(lams)
    assert fit.val_mse[fit.lam] == min(fit.val_mse.values())
    refit = fit_ridge(x, y, lam=fit.lam)  # the chosen λ is refitted on all rows
    torch.testing.assert_close(fit.weight, refit.weight)


def test_validation_split_keeps_episodes_whole():
    episodes = torch.arange(100) // 10
    train, val = _val_split(100, 0.2, episodes, seed=0)
    assert set(episodes[train].tolist()).isdisjoint(episodes[val].tolist())
    assert len(set(episodes[val].tolist())) == 2
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))


def test_errors():
    x, y, _, _ = _data(10, 3, 2, 5)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        fit_ridge(x, y, lam=-1.0)
    with pytest.raises(ValueError, match="rows must be paired"):
        fit_ridge(x, y[:5])
    with pytest.raises(ValueError, match="at least 2 episodes"):
        fit_ridge(x, y, episodes=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="val_fraction"):
        fit_ridge(x, y, val_fraction=1.0)

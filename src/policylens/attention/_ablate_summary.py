"""The ablation battery's summary: tables with intervals over episodes, the findings they support, a plot.

Open loop: each episode is reduced to the mean over its keyframes (episodes are the unit, as in
:mod:`._stats`); a condition's change gets a 95% bootstrap interval resampling episodes and is
compared with the noise floor of the same episodes by ``paired_bootstrap_diff`` (paired bootstrap
interval, sign-flip p). Closed loop: success with its Wilson interval, and the paired difference from
the unablated rollouts on the same layouts (per-episode 0/1, the same paired test). Attention: the
mass on each span with its interval, and the paired difference from the unablated inputs. A finding
is written only where a 95% interval excludes zero and the paired sign-flip test gives p < 0.05 (with
very few episodes a bootstrap interval can collapse onto one value); an attention difference must
also reach 0.01.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._stats import bootstrap_ci, paired_bootstrap_diff, wilson_interval

__all__ = ["plot_ablation", "summarize_ablation"]

SPANS = (("pad", "padding"), ("sink", "the sink token"), ("instruction", "the instruction"))
MIN_MASS_DIFF = 0.01


def _episode_means(values: list) -> np.ndarray:
    """(episodes,) mean of each episode's finite values (NaN when it has none)."""
    out = []
    for v in values:
        a = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
        out.append(a[np.isfinite(a)].mean() if np.isfinite(a).any() else np.nan)
    return np.asarray(out)


def _ci(values: list, n_boot: int, rng) -> dict | float | None:
    e = _episode_means(values)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return None
    if e.size == 1:
        return float(e[0])
    ci = bootstrap_ci(e, n_boot=n_boot, rng=rng)
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high}


def _paired(a: list, b: list, n_boot: int, rng) -> dict | None:
    x, y = _episode_means(a), _episode_means(b)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return None
    d = paired_bootstrap_diff(x[keep], y[keep], n_boot=n_boot, n_perm=4096, rng=rng)
    return {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value}


def _est(v) -> float | None:
    return v["estimate"] if isinstance(v, dict) else v


def _bounds(v) -> tuple[float, float, float]:
    """(estimate, low, high) of an interval cell; a single episode's value is its own bounds."""
    return (v["estimate"], v["low"], v["high"]) if isinstance(v, dict) else (v, v, v)


def _supported(d: dict | None) -> bool:
    """The 95% interval excludes zero and the sign-flip test agrees (p < 0.05): with very few episodes a
    bootstrap interval can collapse onto one value while no test could reject anything."""
    return d is not None and (d["low"] > 0 or d["high"] < 0) and d["p_value"] < 0.05


def _open_rows(records: list[dict], names: Sequence[str], n_boot: int, rng, findings: list) -> list[dict]:
    rows = []
    if not records:
        return rows
    floor = [r["noise_floor"]["si_mse"] for r in records]
    n_frames = sum(len(f) for f in floor)
    rows.append({"condition": "noise floor (seed + 1)", "si_mse": _ci(floor, n_boot, rng),
                 "cosine": _ci([r["noise_floor"]["cosine"] for r in records], n_boot, rng),
                 "n_episodes": len(records), "n_frames": n_frames})  # fmt: skip
    for name in names:
        have = [r for r in records if name in r["change"]]
        if not have:
            continue
        si = [r["change"][name]["si_mse"] for r in have]
        row = {"condition": name, "si_mse": _ci(si, n_boot, rng),
               "cosine": _ci([r["change"][name]["cosine"] for r in have], n_boot, rng),
               "vs_noise_floor": _paired(si, [r["noise_floor"]["si_mse"] for r in have], n_boot, rng),
               "n_episodes": len(have), "n_frames": sum(len(s) for s in si)}  # fmt: skip
        rows.append(row)
        d = row["vs_noise_floor"]
        if _supported(d) and d["low"] > 0:
            findings.append(
                f"{name} moves the action more than the policy's own sampling noise: scale-invariant MSE "
                f"{_est(row['si_mse']):.4f} against {_est(rows[0]['si_mse']):.4f} for the noise floor "
                f"({d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], {len(have)} episodes)."
            )
    return rows


def _mass(record: dict, name: str, layer: str, spans: Sequence[str]) -> list | None:
    m = record["mass"].get(name, {}).get(layer)
    if m is None or not spans or any(s not in m for s in spans):
        return None
    cols = [[np.nan if x is None else x for x in m[s]] for s in spans]
    return list(np.sum(cols, axis=0))


def _attention_rows(records, conds: Mapping[str, tuple[str, ...]], cams, n_boot, rng, findings) -> list[dict]:
    rows: list[dict] = []
    layers = sorted({li for r in records for li in r["mass"].get("none", {})}, key=lambda s: int(s[1:]))
    for name in ["none", *conds]:
        have = [r for r in records if name in r["mass"]]
        hits: dict[str, list] = {}  # span -> [(diff, layer, paired difference)] the intervals support
        for li in layers:
            row: dict = {"condition": "unablated" if name == "none" else name, "layer": int(li[1:])}
            for span, _ in SPANS:
                row[span] = _ci([_mass(r, name, li, [span]) for r in have], n_boot, rng)
            images = [f"image[{c}]" for c in cams]
            row["image (all cameras)"] = _ci([_mass(r, name, li, images) for r in have], n_boot, rng)
            ablated = [f"image[{c}]" for c in conds.get(name, ())]
            row["ablated cameras"] = _ci([_mass(r, name, li, ablated) for r in have], n_boot, rng) if ablated else None
            rows.append({**row, "n_episodes": len(have), "n_frames": sum(len(r["keyframes"]) for r in have)})
            for span, _ in SPANS if name != "none" else ():
                a, b = ([_mass(r, n, li, [span]) for r in have] for n in (name, "none"))
                d = _paired(a, b, n_boot, rng)
                if _supported(d) and abs(d["diff"]) >= MIN_MASS_DIFF:
                    hits.setdefault(span, []).append((d["diff"], li, d))
        for span, text in SPANS:
            if span in hits:
                diff, li, d = max(hits[span], key=lambda h: abs(h[0]))
                where = ", ".join(h[1][1:] for h in hits[span])
                findings.append(
                    f"{name}: attention mass on {text} {'rises' if diff > 0 else 'falls'} at layer(s) {where} "
                    f"(largest at layer {li[1:]}: {diff:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}])."
                )
    return rows


def _closed_rows(closed: Mapping[str, dict], n_boot: int, rng, findings: list) -> list[dict]:
    if "none" not in closed:
        return []
    base = closed["none"]["success"]
    rows = []
    for name, res in closed.items():
        s = res["success"]
        low, high = wilson_interval(int(sum(s)), len(s))
        row = {"condition": "unablated" if name == "none" else name, "successes": int(sum(s)), "n": len(s),
               "success_rate": float(np.mean(s)), "low": low, "high": high,
               "vs_unablated": None if name == "none" else _paired([[x] for x in s], [[x] for x in base], n_boot, rng),
               "n_episodes": len(s), "n_frames": int(sum(res.get("length", [])))}  # fmt: skip
        rows.append(row)
        d = row["vs_unablated"]
        if _supported(d):
            findings.append(
                f"{name}: success {int(sum(s))}/{len(s)} against {int(sum(base))}/{len(base)} unablated on the same "
                f"layouts ({100 * d['diff']:+.0f} points [{100 * d['low']:+.0f}, {100 * d['high']:+.0f}])."
            )
    return rows


def _black_vs(records, closed, conds, n_boot, rng, findings) -> list[dict]:
    """Black against every other kind of the same target, closed loop (success) and open loop (change)."""
    out = []
    for black in (n for n in conds if n.endswith(":black")):
        target = black.rpartition(":")[0]
        for other in (n for n in conds if n.startswith(target + ":") and n != black):
            if black in closed and other in closed:
                a, b = ([[x] for x in closed[n]["success"]] for n in (black, other))
                d = _paired(a, b, n_boot, rng)
                out.append({"target": target, "other": other, "mode": "closed loop", "metric": "success", "diff": d})
                if _supported(d):
                    findings.append(f"{black} differs from {other} in closed loop: success {100 * d['diff']:+.0f} "
                                    f"points [{100 * d['low']:+.0f}, {100 * d['high']:+.0f}].")  # fmt: skip
            have = [r for r in records if black in r["change"] and other in r["change"]]
            if have:
                d = _paired([r["change"][black]["si_mse"] for r in have], [r["change"][other]["si_mse"] for r in have],
                            n_boot, rng)  # fmt: skip
                out.append({"target": target, "other": other, "mode": "open loop", "metric": "si_mse", "diff": d})
                if _supported(d):
                    findings.append(f"{black} differs from {other} in open loop: scale-invariant MSE {d['diff']:+.4f} "
                                    f"[{d['low']:+.4f}, {d['high']:+.4f}].")  # fmt: skip
    return out


def summarize_ablation(
    records: list[dict],
    closed: Mapping[str, dict],
    conditions: Mapping[str, tuple[str, ...]],
    cameras: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """``{"open_loop", "closed_loop", "attention", "black_vs_others", "findings"}`` from the episodes'
    open-loop ``records``, the ``closed`` loop's ``{condition or "none": {"success": [...], "length":
    [...]}}`` and ``conditions`` {name: the cameras it ablates}, in table order."""
    rng, findings = np.random.default_rng(seed), []
    closed_rows = _closed_rows(closed, n_boot, rng, findings)
    open_rows = _open_rows(records, list(conditions), n_boot, rng, findings)
    black = _black_vs(records, closed, list(conditions), n_boot, rng, findings)
    attention = _attention_rows(records, conditions, cameras, n_boot, rng, findings) if records else []
    origin = records[0]["origin"] if records else None
    return {"closed_loop": closed_rows, "open_loop": {"origin": origin, "rows": open_rows},
            "attention": attention, "black_vs_others": black, "findings": findings}  # fmt: skip


def plot_ablation(summary: Mapping, path: str | Path) -> Path:
    """A PNG: closed-loop success per condition (Wilson whiskers, the unablated rate dashed) and/or the
    open-loop change per condition (95% whiskers, the noise floor shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed, open_rows = summary["closed_loop"], summary["open_loop"]["rows"]
    panels = [p for p in ("closed", "open") if (closed if p == "closed" else open_rows)]
    if not panels:
        raise ValueError("plot_ablation: the summary holds no closed-loop and no open-loop rows")
    n = max(len(closed), len(open_rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.45 * n + 2), 3.6 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "closed":
            names = [r["condition"] for r in closed]
            est = np.array([r["success_rate"] for r in closed])
            err = np.array([[e - r["low"], r["high"] - e] for e, r in zip(est, closed, strict=True)]).T
            ax.bar(names, est, color=["#4a6fa5" if i else "#888" for i in range(len(names))], yerr=err, capsize=3)
            ax.axhline(est[0], ls="--", color="#444", lw=1)
            ax.set(ylim=(0, 1.05), ylabel="closed-loop success", title="Success per condition (95% Wilson)")
        else:
            floor, rows = open_rows[0], open_rows[1:]
            names = [r["condition"] for r in rows]
            est, lo, hi = np.array([_bounds(r["si_mse"]) for r in rows], dtype=float).T
            ax.bar(names, est, color="#c0392b", yerr=np.stack([est - lo, hi - est]), capsize=3)
            f, flo, fhi = _bounds(floor["si_mse"])
            ax.axhspan(flo, fhi, color="#999", alpha=0.35, label="noise floor (95%)")
            ax.axhline(f, color="#555", lw=1)
            ax.set(ylabel="action change (scale-inv. MSE)", title="Open-loop action change per condition (95%)")
            ax.legend(loc="upper left", fontsize=8)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

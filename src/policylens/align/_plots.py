"""Pictures and tables of an alignment evaluation: the positive vs negative cosine histogram (PNG, Agg) and
a Markdown retrieval table that puts a trained model beside its ridge baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._retrieval import AlignmentReport, SimilarityStats

__all__ = ["plot_similarity_hist", "retrieval_markdown"]


def plot_similarity_hist(stats: SimilarityStats | AlignmentReport, path: str | Path, title: str = "") -> Path:
    """Density histograms of positive and negative cosine similarities; the title gives n, gap and AUROC."""
    pool = ""
    if isinstance(stats, AlignmentReport):
        pool, stats = f"{stats.pool} pools, ", stats.similarity
    edges = np.asarray(stats.bin_edges)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for counts, n, label, color in (
        (stats.neg_counts, stats.n_neg, "negatives", "tab:blue"),
        (stats.pos_counts, stats.n_pos, "positives", "tab:orange"),
    ):
        if n:
            density = np.asarray(counts, dtype=float) / (n * np.diff(edges))
            ax.stairs(density, edges, fill=True, alpha=0.45, color=color, label=f"{label} (n={n:,})")
    for mean, color in ((stats.neg_mean, "tab:blue"), (stats.pos_mean, "tab:orange")):
        if np.isfinite(mean):
            ax.axvline(mean, color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or "positive vs negative pairs", fontsize=10)
    fig.suptitle(_caption(stats, pool), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def retrieval_markdown(reports: Mapping[str, AlignmentReport | Sequence[AlignmentReport]]) -> str:
    """A Markdown table, one row per (method, pool): top-k both ways and chance in %, pool size, cosine gap, AUROC."""
    rows = [(name, r) for name, rs in reports.items() for r in ([rs] if isinstance(rs, AlignmentReport) else rs)]
    if not rows:
        raise ValueError("reports is empty; pass {'method name': evaluate_alignment(...)}")
    ks = sorted(rows[0][1].retrieval["2d->3d"].topk)
    head = ["method", "pool", "pool size"]
    head += [f"{d} top-{k}" for d in ("2D→3D", "3D→2D") for k in ks] + [f"chance top-{k}" for k in ks]
    head += ["cos gap", "AUROC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for name, r in rows:
        fwd, bwd = r.retrieval["2d->3d"], r.retrieval["3d->2d"]
        cells = [name, r.pool, f"{r.pool_size:.1f}"]
        cells += [f"{100 * d.topk[k]:.1f}" for d in (fwd, bwd) for k in ks]
        cells += [f"{100 * fwd.chance[k]:.2f}" for k in ks]
        cells += [f"{r.similarity.gap:.3f}", f"{r.similarity.auroc:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _caption(stats: SimilarityStats, pool: str = "") -> str:
    return f"{pool}n_pos={stats.n_pos:,}, n_neg={stats.n_neg:,}, gap={stats.gap:.3f}, AUROC={stats.auroc:.3f}"


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

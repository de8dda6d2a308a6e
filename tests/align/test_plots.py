"""Histogram PNG and the Markdown retrieval table."""

import torch

from policylens.align._plots import _caption, plot_similarity_hist, retrieval_markdown
from policylens.align._retrieval import evaluate_alignment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(pool="cross-batch"):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(120, 8, generator=g)
    b = a + torch.randn(120, 8, generator=g)
    return evaluate_alignment(a, b, pool=pool, frames=torch.arange(120) // 12, batch_size=40)


def test_histogram_is_a_png(tmp_path):
    rep = _report()
    for name, what in (("report.png", rep), ("nested/stats.png", rep.similarity)):
        path = plot_similarity_hist(what, tmp_path / name, title="model")
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 1000


def test_caption_gives_n_gap_and_auroc():
    s = _report().similarity
    cap = _caption(s)
    assert f"n_pos={s.n_pos:,}" in cap
    assert f"n_neg={s.n_neg:,}" in cap
    assert f"gap={s.gap:.3f}" in cap
    assert f"AUROC={s.auroc:.3f}" in cap


def test_markdown_table_rows_and_values():
    cross, within = _report(), _report("within-frame")
    md = retrieval_markdown({"model": [cross, within], "ridge": cross})
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| method | pool | pool size | 2D→3D top-1 | 2D→3D top-5 | 3D→2D top-1")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert f"| model | within-frame | 12.0 | {100 * within.retrieval['2d->3d'].topk[1]:.1f} |" in md
    assert f"| {100 * cross.retrieval['2d->3d'].chance[1]:.2f} |" in md

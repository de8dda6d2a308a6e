"""``write_report``: one page over an attention run folder, ``OUT/report.html`` and ``OUT/report.md``.

Reads what ``run_attention`` wrote: ``run.json``, every ``{outcome}/{date}/{episode}/done.json``
(its ``success`` field decides the outcome, not the folder name), the ``attention.zarr`` arrays,
the ``*_max.jpg`` overlays and the videos. The HTML is self-contained (inline CSS, overlays as
base64 JPEG, the bar plot as inline SVG, no JS); only the videos are links, relative to ``OUT``.

Numbers. A keyframe's mass on a span is the mean over heads of ``mass/{phase}_L{l}/{span}``
(keyframes, heads); on one camera, the sum of ``{phase}_L{l}/{camera}`` over its grid (the
camera's share of the ``image`` mass). Each episode gives an array of per-keyframe values and
every interval is ``bootstrap_ci`` (95%, episodes resampled). Success vs failure compares
different episodes, so it is unpaired: the difference of the mean episode means of the image
mass, its 95% interval from a bootstrap resampling episodes within each outcome (needs >= 2 of
each), and a two-sided permutation test of the outcome labels over episodes (exact over every
relabelling when there are at most ``n_perm``, else ``n_perm`` random ones with
p = (1 + count) / (1 + n_perm)); Holm corrects over all (phase, layer) rows of that table.
Episodes of unknown outcome count in the mass tables, not in the comparison.

Optional inputs, rendered when present: ``OUT/faithfulness.json`` and ``OUT/overlap.json``,
each a JSON list of rows (or an object ``{"rows": [...], "note": "...", "tests": [...]}``: ``tests``
rows, e.g. ``run_faithfulness``'s paired tests, make a second table). In ``overlap.json`` a row of one
outcome equal to its ``all`` row (every episode of that key has that outcome) is left out. And
``OUT/ablation.json`` (``run_ablation``): the "What the policy uses" section, its tables, the plot
``OUT/ablation.png`` embedded and one line per finding; a folder holding only an ablation gets a
report of that section alone. Overlays name their cameras left to right (``done.json`` ``cameras``). A row is an object
with ``layer``, ``phase``, ``condition`` or ``object``, ``n_episodes`` and ``n_frames`` (ints)
and any other fields (``camera``, ``outcome``, metrics): a number, a string, ``{"estimate",
"low", "high"}`` (an interval) or ``{"diff", "low", "high", "p_value"}`` (a paired
difference); a number ``m`` beside ``m_low`` and ``m_high`` (what ``run_attention`` writes to
``overlap.json``) is shown as one interval. Columns appear in first-seen order.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .._jsonfile import read_json_file
from ._report_ablation import ablation_html, ablation_md, ablation_only
from ._report_html import CSS, html_table
from ._stats import BootstrapCI, PairedDiff, bootstrap_ci, holm, summary_table

__all__ = ["write_report"]

SPANS = ("image", "text", "state", "first", "pad", "suffix")  # mass spans in table order
LABELS = {"image": "image (all)", "first": "first (sink)"}  # their column names where not the span's own
EXTRAS = ("faithfulness", "overlap")
_OVERLAYS: list = []  # the rows of the overlays section: it holds pictures, not a table
_ABLATION: list = []  # the rows of the ablation section: tables, a plot and findings
_IMG_WIDTH = 480  # overlays wider than this are downscaled before embedding
_INTRO = (
    "Per keyframe: attention mass of the phase's queries (prefix: text tokens; suffix: action tokens), mean over "
    "heads. Cells: mean over episodes of each episode's mean, [95% bootstrap interval resampling episodes]."
)
_COMPARISON = (
    "Mass on image tokens (all cameras), success minus failure, unpaired over episodes: 95% bootstrap interval "
    "resampling episodes within each outcome; p from a two-sided permutation test of the outcome labels over "
    "episodes; Holm over all rows of this table."
)


def _episodes(out: Path) -> list[dict]:
    eps = []
    for path in sorted(out.glob("*/*/*/done.json")):
        done = read_json_file(path, "an attention episode's done.json (written by run_attention)")
        outcome = {True: "success", False: "failure"}.get(done.get("success"), "unknown")
        eps.append({**done, "dir": path.parent, "outcome": outcome})
    if not eps:
        raise ValueError(
            f"{out} holds no {{outcome}}/{{date}}/{{episode}}/done.json; run `policylens attention run` "
            "into it first (or wait until an episode finishes)"
        )
    return eps


def _values(eps: list[dict], phases, layers) -> dict[tuple[str, int], dict[str, list[np.ndarray]]]:
    """{(phase, layer): {column: [per-keyframe values (keyframes,) of each episode]}}."""
    import zarr

    data: dict = {}
    for ep in eps:
        group = zarr.open_group(str(ep["dir"] / "attention.zarr"), mode="r")
        for phase, layer in itertools.product(phases, layers):
            key, cols = f"{phase}_L{layer}", data.setdefault((phase, layer), {})
            for cam in sorted(group[key].array_keys()):  # (keyframes, heads, rows, cols) -> (keyframes,)
                cols.setdefault(f"image[{cam}]", []).append(
                    group[f"{key}/{cam}"][:].astype(np.float32).sum((2, 3)).mean(1)
                )
            spans = set(group[f"mass/{key}"].array_keys())
            for span in (s for s in SPANS if s in spans):  # (keyframes, heads) -> (keyframes,)
                cols.setdefault(LABELS.get(span, span), []).append(
                    group[f"mass/{key}/{span}"][:].astype(np.float32).mean(1)
                )
    return data


def _of(per_episode: list, eps: list[dict], outcome: str) -> list:
    """The entries of ``per_episode`` whose episode has ``outcome`` ("all": every one)."""
    return [v for v, e in zip(per_episode, eps, strict=True) if outcome in ("all", e["outcome"])]


def _rel(path: Path, out: Path) -> str:
    return quote(path.relative_to(out).as_posix())


def _ci(per_episode: list[np.ndarray], n_boot: int, rng) -> BootstrapCI | float | None:
    if len(per_episode) >= 2:
        return bootstrap_ci(per_episode, n_boot=n_boot, rng=rng)
    return float(per_episode[0].mean()) if per_episode else None


def _unpaired(a: np.ndarray, b: np.ndarray, n_boot: int, n_perm: int, rng) -> tuple[BootstrapCI | float, float]:
    """mean(a) − mean(b) of per-episode means, its bootstrap interval (>= 2 per group) and a
    two-sided permutation p-value over the group labels."""
    x, k = np.concatenate([a, b]), a.size
    diff = float(a.mean() - b.mean())
    exact = math.comb(x.size, k) <= n_perm
    if exact:  # every relabelling: (comb(n, k), n) masks of the "a" group
        masks = np.zeros((math.comb(x.size, k), x.size), bool)
        for i, c in enumerate(itertools.combinations(range(x.size), k)):
            masks[i, list(c)] = True
    else:
        masks = np.argsort(rng.random((n_perm, x.size)), axis=1) < k
    null = (masks * x).sum(1) / k - (~masks * x).sum(1) / (x.size - k)  # (n_masks,)
    count = int((np.abs(null) >= abs(diff) - 1e-12 * max(1.0, abs(diff))).sum())  # tolerance for rounding ties
    p = count / len(masks) if exact else (count + 1) / (n_perm + 1)
    if min(a.size, b.size) < 2:
        return diff, p
    boots = a[rng.integers(0, a.size, (n_boot, a.size))].mean(1) - b[rng.integers(0, b.size, (n_boot, b.size))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return BootstrapCI(diff, float(lo), float(hi)), p


def _n(per_episode: list[np.ndarray]) -> dict[str, int]:
    return {"n_episodes": len(per_episode), "n_frames": sum(e.size for e in per_episode)}


def _mass_rows(data: dict, phase: str, n_boot: int, rng) -> list[dict]:
    """One row per layer of ``phase``: every column's interval over episodes and the row's n."""
    rows = [(layer, vals) for (p, layer), vals in data.items() if p == phase]
    return [{"layer": l, **{c: _ci(v, n_boot, rng) for c, v in vals.items()}, **_n(vals["text"])} for l, vals in rows]


def _comparison(data: dict, eps: list[dict], n_boot: int, n_perm: int, rng) -> list[dict]:
    rows = []
    for (phase, layer), vals in data.items():
        per = {o: _of(vals["image (all)"], eps, o) for o in ("success", "failure")}
        s, f = (np.array([v.mean() for v in per[o]]) for o in ("success", "failure"))
        diff, p = _unpaired(s, f, n_boot, n_perm, rng)
        row = {"phase": phase, "layer": layer, **{o: _ci(per[o], n_boot, rng) for o in per}}
        row |= {"episodes (S / F)": f"{s.size} / {f.size}", "success − failure": diff, "p": p}
        rows.append({**row, **_n(per["success"] + per["failure"])})
    for row, adj in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p"], row["p (Holm)"] = f"{row['p']:.3g}", f"{adj:.3g}"
    return rows


def _bound(key: str, row: dict) -> bool:
    """``key`` is ``m_low`` / ``m_high`` of a metric ``m`` that the row holds with both bounds."""
    m = key.rpartition("_")[0]
    return key.endswith(("_low", "_high")) and all(k in row for k in (m, f"{m}_low", f"{m}_high"))


def _metric(key: str, v, row: dict):
    if isinstance(v, int | float) and not isinstance(v, bool) and _bound(f"{key}_low", row):
        return BootstrapCI(float(v), float(row[f"{key}_low"]), float(row[f"{key}_high"]))
    if isinstance(v, dict) and {"diff", "low", "high", "p_value"} <= v.keys():
        return PairedDiff(*(float(v[k]) for k in ("diff", "low", "high", "p_value")))
    if isinstance(v, dict) and {"estimate", "low", "high"} <= v.keys():
        return BootstrapCI(*(float(v[k]) for k in ("estimate", "low", "high")))
    return float(v) if isinstance(v, float) else v


def _rows(path: Path, rows: list[dict]) -> list[dict]:
    rows = [{k: _metric(k, v, r) for k, v in r.items() if not _bound(k, r)} for r in rows]
    try:
        summary_table(rows)  # checks that every row states its n
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return rows


def _same_as_all(rows: list[dict]) -> list[dict]:
    """The rows without those of one outcome equal to their ``all`` row (every episode has that outcome)."""
    key = lambda r: tuple((k, repr(v)) for k, v in r.items() if k != "outcome")  # noqa: E731
    alls = {key(r) for r in rows if r.get("outcome") == "all"}
    return [r for r in rows if r.get("outcome") in (None, "all") or key(r) not in alls]


def _extra(path: Path) -> tuple[list[dict], str, list[dict]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read as JSON ({e}); expected a list of rows (see write_report)") from e
    rows, note = (value.get("rows"), str(value.get("note", ""))) if isinstance(value, dict) else (value, "")
    tests = value.get("tests") or [] if isinstance(value, dict) else []
    for name, got in (("rows", rows), ("tests", tests or [{}])):
        if not isinstance(got, list) or not got or not all(isinstance(r, dict) for r in got):
            raise ValueError(f"{path} must hold a non-empty list of row objects (or {{'rows': [...]}}) in {name}, "
                             f"got {value!r:.80}")  # fmt: skip
    return _same_as_all(_rows(path, rows)), note, _rows(path, tests) if tests else []


def _jpeg_b64(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as img:
        if img.width <= _IMG_WIDTH:
            return base64.b64encode(path.read_bytes()).decode()
        small = img.convert("RGB").resize((_IMG_WIDTH, round(img.height * _IMG_WIDTH / img.width)))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def _svg(data: dict, eps: list[dict], n_boot: int, rng) -> str:
    """Grouped bars of the image mass per (phase, layer): all episodes and each outcome, 95% whiskers."""
    colours = {"all": "#4a6fa5", "success": "#2e8b57", "failure": "#c0392b"}
    groups = [
        (f"{p} L{layer}", {o: _ci(_of(vals["image (all)"], eps, o), n_boot, rng) for o in colours})
        for (p, layer), vals in data.items()
    ]
    bar, h, top, left = 22, 220, 30, 50
    width = left + len(groups) * (3 * bar + 28) + 10
    y = lambda v: top + h * (1 - min(max(v, 0.0), 1.0))  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 320)}" height="{top + h + 40}" '
        f'font-size="11"><text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" '
        'text-anchor="middle">mass on image tokens</text>'
    ]
    parts += [f'<line x1="{left}" x2="{width}" y1="{y(t)}" y2="{y(t)}" stroke="#ddd"/><text x="{left - 6}" '
              f'y="{y(t) + 4}" text-anchor="end">{t:g}</text>' for t in (0, 0.25, 0.5, 0.75, 1)]  # fmt: skip
    parts += [f'<rect x="{left + 80 * i}" y="6" width="10" height="10" fill="{c}"/><text x="{left + 80 * i + 14}" '
              f'y="15">{o}</text>' for i, (o, c) in enumerate(colours.items())]  # fmt: skip
    for g, (label, cis) in enumerate(groups):
        x0 = left + 14 + g * (3 * bar + 28)
        for i, (o, ci) in enumerate(cis.items()):
            if ci is None:
                continue
            est, x = (ci.estimate if isinstance(ci, BootstrapCI) else ci), x0 + i * bar
            parts.append(
                f'<rect x="{x}" y="{y(est):.1f}" width="{bar - 3}" height="{y(0) - y(est):.1f}" '
                f'fill="{colours[o]}"><title>{o}: {est:.3f}</title></rect>'
            )
            if isinstance(ci, BootstrapCI):
                cx = x + (bar - 3) / 2
                parts.append(f'<line x1="{cx}" x2="{cx}" y1="{y(ci.low):.1f}" y2="{y(ci.high):.1f}" stroke="#222"/>')
        parts.append(f'<text x="{x0 + 1.5 * bar}" y="{top + h + 16}" text-anchor="middle">{html.escape(label)}</text>')
    return "".join(parts) + "</svg>"


def _cameras(e: dict) -> str:
    cams = e.get("cameras")
    return "left to right: " + " | ".join(cams) if cams else "cameras side by side (order not recorded by this run)"


def _panes(e: dict) -> str:
    """A label over each camera's pane of a side-by-side overlay."""
    cams = e.get("cameras") or ["cameras side by side (order not recorded by this run)"]
    return "<div class='panes'>" + "".join(f"<span>{html.escape(c)}</span>" for c in cams) + "</div>"


def _html(out: Path, eps: list[dict], header: list, sections: list, pics: dict, svg: str) -> str:
    h = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Attention report</title><style>{CSS}"
        "</style></head><body><h1>Attention report</h1><table>"
    ]
    h += [f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in header]
    h.append(
        f"</table><h2>Mass on image tokens per layer</h2><p class='note'>{html.escape(_INTRO)} Bars: mean "
        f"over episodes, whiskers: 95% interval.</p>{svg}"
    )
    for title, text, rows in sections:
        h.append(f"<h2>{html.escape(title)}</h2>" + (f"<p class='note'>{html.escape(text)}</p>" if text else ""))
        h.append(html_table(rows) if rows and rows is not _ABLATION else "")
        if rows is _OVERLAYS:
            for (phase, layer), shown in pics.items():
                h.append(f"<h3>{phase}, layer {layer}</h3>")
                for outcome in ("success", "failure"):  # one row per outcome that has examples, side by side
                    mine = [(e, img) for e, img in shown if e["outcome"] == outcome]
                    if not mine:
                        continue
                    h.append(f"<div class='row'><div class='label {outcome}'>{outcome}</div>")
                    h += [
                        f"<figure class='{outcome}'>{_panes(e)}<img alt='{phase} L{layer}' src='data:image/jpeg;"
                        f"base64,{_jpeg_b64(img)}'><figcaption>{html.escape(e['dir'].name)}, frame "
                        f"{e['keyframes'][0]}<br>{html.escape(str(e.get('instruction', '')))}</figcaption></figure>"
                        for e, img in mine
                    ]
                    h.append("</div>")
        if rows is _ABLATION:
            h.append(ablation_html(out))
    h.append(
        "<h2>Episodes</h2><table><tr><th>episode</th><th>outcome</th><th>instruction</th><th>keyframes</th>"
        "<th>videos (relative to this page)</th></tr>"
    )
    for e in eps:
        links = " ".join(f"<a href='{_rel(p, out)}'>{html.escape(p.name)}</a>" for p in e["videos"]) or "—"
        h.append(
            f"<tr><td class='path'>{html.escape(e['dir'].relative_to(out).as_posix())}</td><td>{e['outcome']}"
            f"</td><td>{html.escape(str(e.get('instruction', '')))}</td><td>{len(e['keyframes'])}</td>"
            f"<td>{links}</td></tr>"
        )
    return "".join(h) + "</table></body></html>\n"


def _markdown(out: Path, eps: list[dict], header: list, sections: list, pics: dict) -> str:
    m = ["# Attention report\n", *(f"- {k}: `{v}`" for k, v in header), f"\n{_INTRO}"]
    for title, text, rows in sections:
        table = f"\n{summary_table(rows)}" if rows and rows is not _ABLATION else ""
        m.append(f"\n## {title}\n" + (f"\n{text}\n" if text else "") + table)
        if rows is _OVERLAYS:
            m += [
                f"- {ph} L{layer}, {e['outcome']} {e['dir'].name} ({_cameras(e)}): ![]({_rel(img, out)})"
                for (ph, layer), shown in pics.items()
                for e, img in shown
            ]
        if rows is _ABLATION:
            m.append(ablation_md(out))
    m.append("\n## Episodes\n")
    for e in eps:
        links = ", ".join(f"[{p.name}]({_rel(p, out)})" for p in e["videos"]) or "no videos"
        m.append(
            f"- {e['outcome']} `{e['dir'].relative_to(out).as_posix()}` ({len(e['keyframes'])} keyframes): " + links
        )
    return "\n".join(m) + "\n"


def write_report(
    out_dir: str | Path, n_boot: int = 2000, n_perm: int = 10000, examples: int = 3, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``OUT/report.html`` (self-contained) and ``OUT/report.md`` for the attention run in
    ``out_dir``; returns their paths. ``examples`` episodes per outcome show their overlays;
    ``n_boot`` / ``n_perm`` / ``seed`` drive the bootstrap and the permutation test."""
    out = Path(out_dir)
    for name, v, least in (("n_boot", n_boot, 1), ("n_perm", n_perm, 1), ("examples", examples, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"write_report: {name}={v!r}; expected an int >= {least}")
    if not (out / "run.json").is_file():
        if (out / "ablation.json").is_file():
            return ablation_only(out)
        raise FileNotFoundError(
            f"{out}/run.json not found: out_dir must be a folder written by run_attention "
            "(`policylens attention run --out OUT`) or by `policylens attention ablate --out OUT`"
        )
    run = read_json_file(out / "run.json", "the settings of an attention run (written by run_attention)")
    eps, rng = _episodes(out), np.random.default_rng(seed)
    data = _values(eps, run["phases"], run["layers"])
    n = {o: sum(e["outcome"] == o for e in eps) for o in ("success", "failure", "unknown")}
    line = f"{len(eps)} (successes: {n['success']}, failures: {n['failure']}" + (
        f", unknown: {n['unknown']})" if n["unknown"] else ")"
    )
    header = [
        ("policy", run.get("policy")),
        ("weights hash", run.get("weights_hash")),
        ("episodes", line),
        ("keyframes (all episodes)", sum(len(e["keyframes"]) for e in eps)),
        *((f"setting {k}", json.dumps(v)) for k, v in run.items() if k not in ("policy", "weights_hash")),
    ]
    sections = [(f"Attention mass per layer: {p}", "", _mass_rows(data, p, n_boot, rng)) for p in run["phases"]]
    if n["success"] and n["failure"]:
        sections.append(("Success vs failure", _COMPARISON, _comparison(data, eps, n_boot, n_perm, rng)))
    else:
        sections.append(("Success vs failure", "Not computed: the run needs episodes of both outcomes.", None))
    sections.append(("Example overlays (first keyframe, most active head)", "", _OVERLAYS))
    for name in EXTRAS:
        if (out / f"{name}.json").is_file():
            rows, note, tests = _extra(out / f"{name}.json")
            sections.append((f"{name.capitalize()} ({name}.json)", note, rows))
            if tests:
                sections.append((f"{name.capitalize()} tests ({name}.json)", "", tests))
    if (out / "ablation.json").is_file():
        sections.append(("What the policy uses (ablation.json)", "", _ABLATION))
    shown = [e for o in ("success", "failure") for e in [x for x in eps if x["outcome"] == o][:examples]]
    pics: dict = {key: [] for key in data}  # (phase, layer) -> [(episode, first keyframe's overlay)]
    for (phase, layer), e in itertools.product(data, shown):
        img = e["dir"] / f"{e['keyframes'][0]:05d}" / f"{phase}_L{layer}_max.jpg"
        pics[(phase, layer)] += [(e, img)] if img.is_file() else []
    for e in eps:
        e["videos"] = sorted(p for p in e["dir"].iterdir() if p.suffix in (".webm", ".mp4"))
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(_html(out, eps, header, sections, pics, _svg(data, eps, n_boot, rng)), encoding="utf-8")
    md_path.write_text(_markdown(out, eps, header, sections, pics), encoding="utf-8")
    return html_path, md_path

"""The report's "What the policy uses" section, read from ``OUT/ablation.json`` (``run_ablation``).

:func:`ablation_tables` turns the summary into rows the report's tables render (intervals as
``BootstrapCI`` / ``PairedDiff``; every row states its n): closed-loop success with its Wilson
interval and the paired difference from the unablated rollouts, the open-loop action change
(scale-invariant MSE of the motion) against the noise floor, and the attention
mass per span and layer. The findings are the summary's own lines (a finding only where an interval
excludes zero); the conditions that could not run are listed with the reason.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .._jsonfile import read_json_file
from ._report_html import CSS, html_table
from ._stats import BootstrapCI, PairedDiff, summary_table

__all__ = ["ablation_html", "ablation_md", "ablation_only", "ablation_tables", "read_ablation", "unavailable"]

INTRO = (
    "Each camera and the instruction ablated in turn. Closed loop: success in the simulator on held-out "
    "layouts, paired with the unablated rollouts on the same layouts (95% Wilson interval; difference: paired "
    "bootstrap interval, sign-flip p). Open loop: how far the action chunk moves with the same flow noise, "
    "against the policy's own sampling noise (two noise seeds of the unablated input); intervals resample "
    "episodes. Attention: mass of the instruction tokens' attention on each span, mean over heads."
)


def read_ablation(out: Path) -> dict | None:
    """``OUT/ablation.json``, or None when the folder has none."""
    path = Path(out) / "ablation.json"
    if not path.is_file():
        return None
    value = read_json_file(path, "an ablation summary (written by run_ablation / policylens attention ablate)")
    for key in ("closed_loop", "open_loop", "attention", "findings", "conditions"):
        if key not in value:
            raise ValueError(f"{path} lacks {key!r}; rerun `policylens attention ablate` to rewrite it")
    return value


def _ci(v):
    if isinstance(v, dict) and "estimate" in v:
        return BootstrapCI(v["estimate"], v["low"], v["high"])
    return None if v is None else float(v)


def _diff(v):
    return PairedDiff(v["diff"], v["low"], v["high"], v["p_value"]) if isinstance(v, dict) else None


def ablation_tables(summary: dict) -> list[tuple[str, list[dict]]]:
    """``[(caption, rows)]``: closed loop, open loop, attention (each only when it has rows)."""
    tables = []
    closed = [
        {
            "condition": r["condition"],
            "success": f"{r['successes']}/{r['n']} ({r['success_rate']:.0%})",
            "95% Wilson": f"[{r['low']:.0%}, {r['high']:.0%}]",
            "vs unablated (paired)": _diff(r["vs_unablated"]),
            "n_episodes": r["n_episodes"],
            "n_frames": r["n_frames"],
        }
        for r in summary["closed_loop"]
    ]
    if closed:
        tables.append(("Closed loop: success per condition (n frames: control steps)", closed))
    open_rows = [
        {
            "condition": r["condition"],
            "action change (scale-inv. MSE)": _ci(r["si_mse"]),
            "direction cosine": _ci(r["cosine"]),
            "minus noise floor (paired)": _diff(r.get("vs_noise_floor")),
            "n_episodes": r["n_episodes"],
            "n_frames": r["n_frames"],
        }
        for r in summary["open_loop"]["rows"]
    ]
    if open_rows:
        origin = summary["open_loop"].get("origin")
        tables.append((f"Open loop: action change per condition (motions: origin={origin})", open_rows))
    spans = ("pad", "sink", "instruction", "image (all cameras)", "ablated cameras")
    attention = [
        {"condition": r["condition"], "layer": r["layer"], **{s: _ci(r[s]) for s in spans},
         "n_episodes": r["n_episodes"], "n_frames": r["n_frames"]}
        for r in summary["attention"]
    ]  # fmt: skip
    if attention:
        tables.append(("Attention mass per condition and layer (pad, sink = first valid token)", attention))
    return tables


def unavailable(summary: dict) -> list[str]:
    """``"condition: why"`` for every condition that could not run."""
    return [f"{c['condition']}: {c['note']}" for c in summary["conditions"] if not c["available"]]


def ablation_html(out: Path) -> str:
    summary = read_ablation(out)
    h = [f"<p class='note'>{html.escape(INTRO)}</p>"]
    if (out / "ablation.png").is_file():
        png = base64.b64encode((out / "ablation.png").read_bytes()).decode()
        h.append(f"<img class='plot' alt='ablation per condition' src='data:image/png;base64,{png}'>")
    lines = summary["findings"] or ["No interval excludes zero: no condition is shown to matter."]
    h.append("<h3>Findings</h3><ul class='findings'>" + "".join(f"<li>{html.escape(f)}</li>" for f in lines) + "</ul>")
    h += [f"<h3>{html.escape(caption)}</h3>{html_table(rows)}" for caption, rows in ablation_tables(summary)]
    if unavailable(summary):
        h.append("<p class='note'>Not available: " + html.escape("; ".join(unavailable(summary))) + ".</p>")
    return "".join(h)


def ablation_md(out: Path) -> str:
    summary = read_ablation(out)
    m = [f"\n{INTRO}\n"]
    if (out / "ablation.png").is_file():
        m.append("![ablation per condition](ablation.png)\n")
    lines = summary["findings"] or ["No interval excludes zero: no condition is shown to matter."]
    m += ["### Findings\n", *(f"- {f}" for f in lines)]
    m += [f"\n### {caption}\n\n{summary_table(rows)}" for caption, rows in ablation_tables(summary)]
    if unavailable(summary):
        m.append("\nNot available: " + "; ".join(unavailable(summary)) + ".")
    return "\n".join(m)


def ablation_only(out: Path) -> tuple[Path, Path]:
    """The report of a folder that holds an ablation and no attention run: its section alone."""
    summary = read_ablation(out)
    keep = ("policy", "weights_hash", "episodes", "cameras", "task", "sim_episodes", "layers", "seed")
    header = [(k.replace("_", " "), summary.get(k)) for k in keep if k in summary]
    title = "What the policy uses (ablation.json)"
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>Ablation report</title><style>{CSS}</style>"
            "</head><body><h1>Ablation report</h1><table>"]  # fmt: skip
    page += [f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in header]
    page.append(f"</table><h2>{title}</h2>{ablation_html(out)}</body></html>\n")
    md = ["# Ablation report\n", *(f"- {k}: `{v}`" for k, v in header), f"\n## {title}\n", ablation_md(out)]
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text("".join(page), encoding="utf-8")
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return html_path, md_path

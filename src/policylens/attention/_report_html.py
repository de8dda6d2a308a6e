"""The report's HTML pieces shared by its sections: the page style and tables whose cells show
intervals (``BootstrapCI`` "est [low, high]", ``PairedDiff`` "+diff [low, high], p=…") and every row's n."""

from __future__ import annotations

import html

from ._stats import BootstrapCI, PairedDiff, _cell, _places

__all__ = ["CSS", "html_table"]

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1240px;padding:0 16px;color:#222}
h1{font-size:24px}h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}
table.num td{text-align:right;white-space:nowrap}table.num td:first-child,table.num td.t{text-align:left}
small{color:#777}.note{color:#555;max-width:1000px}td.path{white-space:nowrap}
.row{display:flex;gap:14px;flex-wrap:wrap;align-items:flex-start;margin-bottom:8px}
.label{width:64px;font-weight:600}.label.success{color:#2e8b57}.label.failure{color:#c0392b}
figure{margin:0;border:3px solid #999;padding:3px}
figure.success{border-color:#2e8b57}figure.failure{border-color:#c0392b}figcaption{font-size:12px;max-width:340px}
figure img{display:block;width:340px;height:auto}
.panes{display:flex;width:340px}.panes span{flex:1;text-align:center;font-size:11px;background:#eee;margin:0 1px}
img.plot{max-width:100%;height:auto}code{font-size:12px}.wide{overflow-x:auto}"""


def _hcell(v) -> str:
    if isinstance(v, BootstrapCI):
        d = _places(3, *v)
        return f"{v.estimate:.{d}f}<br><small>[{v.low:.{d}f}, {v.high:.{d}f}]</small>"
    if isinstance(v, PairedDiff):
        d = _places(3, v.diff, v.low, v.high)
        return f"{v.diff:+.{d}f}<br><small>[{v.low:+.{d}f}, {v.high:+.{d}f}], p={v.p_value:.3g}</small>"
    return html.escape(_cell(v, 3))


def _is_text(v) -> bool:
    """Left-align words (names, outcomes); numbers and "2 / 2" stay right-aligned."""
    return isinstance(v, str) and not v[:1].isdigit()


def html_table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in ("n_episodes", "n_frames")))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*cols, "n episodes", "n frames"])
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=t' * _is_text(r.get(c))}>{_hcell(r.get(c))}</td>" for c in cols)
        + f"<td>{int(r['n_episodes'])}</td><td>{int(r['n_frames'])}</td></tr>"
        for r in rows
    )
    return f"<div class='wide'><table class='num'><tr>{head}</tr>{body}</table></div>"

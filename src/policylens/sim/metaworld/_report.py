"""A plain-text table of per-task evaluation results, with the mean success rate."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..._intervals import EvalResult


def results_table(results: Mapping[str, EvalResult], seconds: Mapping[str, float] | None = None) -> str:
    """Per task: successes / n, rate, Wilson 95% interval, mean episode steps (and seconds); then the mean."""
    seconds = seconds or {}
    width = max(len("task"), *(len(t) for t in results), len(f"mean of {len(results)} tasks"))
    head = f"{'task':<{width}}  {'success':>9}  {'rate':>6}  {'95% interval':<16}  {'mean steps':>10}"
    lines = [head + ("  seconds" if seconds else "")]
    for task, r in results.items():
        lo, hi = r.interval
        interval = f"[{lo:.1%}, {hi:.1%}]"
        row = f"{task:<{width}}  {f'{r.successes}/{r.n}':>9}  {r.success_rate:>6.1%}  {interval:<16}"
        row += f"  {np.mean(r.episode_length):>10.1f}"
        lines.append(row + (f"  {seconds[task]:>7.1f}" if task in seconds else ""))
    if len(results) > 1:
        mean = np.mean([r.success_rate for r in results.values()])
        lines.append(f"{f'mean of {len(results)} tasks':<{width}}  {'':>9}  {mean:>6.1%}")
    return "\n".join(lines)

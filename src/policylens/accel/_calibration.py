"""``Calibration``: averaged per-branch step-similarity matrices, the schedule made from them, JSON I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._jsonfile import read_json_file
from ._config import METRICS
from ._schedule import bubbling_union, optimal_update_steps, reuse_error_scores

FORMAT = "policylens.bac.calibration"
VERSION = 1


@dataclass
class Calibration:
    """What calibration measured on one model (``model_hash``) for one step count (``num_steps``).

    ``matrices[metric][branch]`` is the (K, K) similarity (cosine) or distance (l1, l2, mse) between
    branch outputs at steps a and t, averaged over every calibration sample and noise seed.
    """

    num_steps: int
    block_names: list[str]
    kinds: dict[str, str]
    layers: dict[str, int]
    model_hash: str
    metric: str
    num_updates: int
    n_bu: int
    matrices: dict[str, dict[str, np.ndarray]]
    schedule: dict[str, list[int]] = field(default_factory=dict)
    bu_scores: dict[str, float] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 0

    def __post_init__(self) -> None:
        if "l1" not in self.matrices:
            raise ValueError("Calibration.matrices needs the 'l1' matrices (the Bubbling-Union score uses them).")
        if not self.bu_scores:
            self.bu_scores = reuse_error_scores(self.matrices["l1"])
        if not self.schedule:
            self.schedule = self.make_schedule(self.num_updates, self.n_bu, self.metric)

    def make_schedule(self, num_updates: int, n_bu: int = 0, metric: str | None = None) -> dict[str, list[int]]:
        """Per-branch update steps: DP on ``metric`` matrices, then Bubbling Union on the top ``n_bu``."""
        metric = metric or self.metric
        if metric not in self.matrices:
            raise ValueError(
                f"metric={metric!r} was not kept in this calibration; kept: {sorted(self.matrices)}. "
                "Re-run calibrate with keep_metrics including it."
            )
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: expected one of {METRICS}.")
        mats = self.matrices[metric]
        base = {n: optimal_update_steps(mats[n], num_updates, maximize=metric == "cosine") for n in self.block_names}
        return bubbling_union(base, self.layers, self.kinds, self.bu_scores, n_bu)

    def to_dict(self, include_matrices: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "num_steps": self.num_steps,
            "model_hash": self.model_hash,
            "block_names": self.block_names,
            "kinds": self.kinds,
            "layers": self.layers,
            "metric": self.metric,
            "num_updates": self.num_updates,
            "n_bu": self.n_bu,
            "num_samples": self.num_samples,
            "schedule": self.schedule,
            "bu_scores": self.bu_scores,
            "stability": self.stability,
            "mean_similarity": {
                m: {n: float(np.mean(a)) for n, a in mats.items()} for m, mats in self.matrices.items()
            },
        }
        if include_matrices:
            out["matrices"] = {
                m: {n: np.round(a, 6).tolist() for n, a in mats.items()} for m, mats in self.matrices.items()
            }
        return out

    def save(self, path: str | Path, include_matrices: bool = True) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(include_matrices)) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} not found; write one with `policylens accel calibrate`.")
        data = read_json_file(path, "a BAC calibration written by `policylens accel calibrate`")
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(
                f"{path}: format={data.get('format')!r} version={data.get('version')!r}; expected "
                f"{FORMAT!r} version {VERSION}."
            )
        if "matrices" not in data:
            raise ValueError(f"{path}: saved without matrices; re-save with include_matrices=True to load it.")
        mats = {m: {n: np.asarray(a, dtype=np.float64) for n, a in d.items()} for m, d in data["matrices"].items()}
        return cls(
            num_steps=data["num_steps"],
            block_names=list(data["block_names"]),
            kinds=data["kinds"],
            layers={k: int(v) for k, v in data["layers"].items()},
            model_hash=data["model_hash"],
            metric=data["metric"],
            num_updates=data["num_updates"],
            n_bu=data["n_bu"],
            matrices=mats,
            schedule={k: [int(s) for s in v] for k, v in data["schedule"].items()},
            bu_scores={k: float(v) for k, v in data["bu_scores"].items()},
            stability=data.get("stability", {}),
            num_samples=data.get("num_samples", 0),
        )

"""``retain_train``: fine-tune TinyVLA on a new task's episodes through ``train_vla``'s loop, with
a :class:`Retainer` as its step — the anchor cache keeps the teacher's bridge features in
reach. TensorBoard (``OUT/tb``) gets L_act, L_ret, λ, cos(g_act, g_ret), whether the projection
fired, and every ``log_every`` steps cos(Δθ, g_ret).

Everything is checked before the first step (and :func:`open_anchors` / :func:`check_retain_out`
let a command check the anchors and its ``--out`` before it makes any episode). The task data's
statistics are compared with the teacher's (``_task_stats``): dims far outside that the teacher
never used take the task's statistics, the teacher's function unchanged. The step saves with each
checkpoint what the summary is computed from (λ, the anchor generator, per-step L_act, L_ret,
projection, cos(Δθ, g_ret)), so ``retain.json`` describes the whole run after any number of
resumes, and a finished run asked again reports itself and keeps its results.

Under torchrun the task and anchor batches are global batches, each rank takes its slice, and the
Retainer sees the model through DDP (both gradients and L_ret averaged over the ranks before the
projection and the λ update): the run is the one-process run. Rank 0 writes ``retain.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..runs import shard, trained_steps
from ._anchors import ANCHOR_FEATURES, AnchorSet
from ._data_parallel import check_split, on_device, ranks, task_retainer
from ._methods import method_type
from ._retainer import Retainer, RetentionConfig
from ._task_stats import adopt_task_stats, check_task_stats, far_dims, planned_task_stats, task_stats_message

__all__ = [
    "RetainTrainConfig",
    "check_retain_out",
    "finished_message",
    "open_anchors",
    "retain_train",
    "retention_step",
]

SUMMARY_FILE = "retain.json"
SERIES = ("loss_act", "loss_ret", "projected", "cos_dtheta_ret")


@dataclass
class RetainTrainConfig:
    """Optimiser side of a retention run (the retention side is :class:`RetentionConfig`).
    ``task_stats``: give the dims of the task data far outside the teacher's normalisation that the
    teacher never used the task data's statistics (the teacher's function unchanged).
    ``retain_every``: the retention pass (and the projection, and λ's update) on every k-th step
    only (steps 0, k, 2k, ...), plain steps between. ``preload_anchors``: decode every anchor
    sample once when the run opens the cache (the same batches, without decoding frames at each
    step). ``anchor_features``: ``all`` (the bridge) or ``action`` (the cached action output
    alone: action distillation with ``method="fixed"``; the cache must be built with it).
    ``replay_fraction``: the share of each global batch's rows drawn from the replay episodes
    (``retain_train(replay=)``; 0: none)."""

    steps: int = 300
    batch_size: int = 16
    anchor_batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    clip: float = 1.0
    task_stats: bool = True
    retain_every: int = 1
    preload_anchors: bool = True
    anchor_features: str = "all"
    replay_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "anchor_batch_size", "save_every", "log_every", "retain_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name}={value!r} must be a positive whole number")
        if self.anchor_features not in ANCHOR_FEATURES:
            raise ValueError(
                f"{type(self).__name__}.anchor_features={self.anchor_features!r} is unknown; use one of "
                f"{list(ANCHOR_FEATURES)}"
            )
        from policylens.models import check_replay_fraction

        check_replay_fraction(self.replay_fraction, self.batch_size, type(self).__name__)


class _RetentionStep:
    """A ``train_vla`` step (anchor batch, the retainer's two passes, clipping, optimiser step) and
    the ``state=`` saved with each checkpoint: λ, the anchor generator, the per-step series. With
    ``retain_every=k`` steps 0, k, 2k, ... are retention steps and the others plain steps (no
    anchor drawn, L_act alone, λ untouched; their L_ret and projection are NaN in the series)."""

    def __init__(self, retainer: Retainer, anchors: AnchorSet, config: RetainTrainConfig) -> None:
        self.retainer, self.anchors, self.config = retainer, anchors, config
        self.rng = np.random.default_rng(config.seed + 1)
        self.series: dict[str, list] = {k: [] for k in SERIES}  # device scalars until saved
        self.ranks, self.device = ranks(), retainer.params[0].device
        check_split(self.ranks.world, anchor_batch_size=config.anchor_batch_size)

    def _anchor_batch(self) -> dict:
        """This rank's slice of a global anchor batch (the rows ``AnchorSet.sample`` draws)."""
        rows = self.rng.integers(0, len(self.anchors), self.config.anchor_batch_size)
        return on_device(self.anchors.batch(shard(rows, self.ranks.rank, self.ranks.world)), self.device)

    def __call__(self, model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        retainer, config = self.retainer, self.config
        step = len(self.series["loss_act"])  # steps taken, restored on resume
        retains = retainer.method.needs_retention and step % config.retain_every == 0
        anchor = self._anchor_batch() if retains else None  # no anchor draw on a plain step
        stats = retainer.backward(batch, anchor, retain=retains or not retainer.method.needs_retention)
        torch.nn.utils.clip_grad_norm_(retainer.params, config.clip)
        watch = step % config.log_every == 0 and retains
        before = [p.detach().clone() for p in retainer.params] if watch else None
        optimizer.step()
        if before is not None:
            stats["cos_dtheta_ret"] = retainer.alignment(before)
            self.series["cos_dtheta_ret"].append(stats["cos_dtheta_ret"])
        for name in ("loss_act", "loss_ret", "projected"):
            self.series[name].append(stats[name].detach() if retains or name == "loss_act" else float("nan"))
        if not retains and retainer.method.needs_retention:  # a plain step between retention steps
            stats = {k: v for k, v in stats.items() if k not in ("loss_ret", "cos_act_ret", "projected")}
        return {"loss": stats.pop("loss_act"), **stats}

    def state_dict(self) -> dict:
        self.series = {k: [float(v) for v in values] for k, values in self.series.items()}
        return {
            "retainer": self.retainer.state_dict(),
            "anchor_rng": self.rng.bit_generator.state,
            "series": self.series,
        }

    def load_state_dict(self, state: dict) -> None:
        self.retainer.load_state_dict(state["retainer"])
        self.rng.bit_generator.state = state["anchor_rng"]
        self.series = {k: list(state["series"].get(k, [])) for k in SERIES}


def retention_step(retainer: Retainer, anchors: AnchorSet, config: RetainTrainConfig) -> _RetentionStep:
    """A ``train_vla`` step: anchor batch, the retainer's two passes, clipping, optimiser step. Pass
    it as ``state=`` too: it saves λ, its anchor generator and the per-step series it records."""
    return _RetentionStep(retainer, anchors, config)


def open_anchors(anchors: str | Path, model: nn.Module, preload: bool = False, features: str = "all") -> AnchorSet:
    """The bridge cache at ``anchors`` for ``model``, checked in about a second: it exists, is a
    bridge store whose taps the model has and whose samples can be read, and one sample through
    the student gives the stored feature width. Errors name the cache and the fix. ``preload``:
    then decode every anchor sample once (:class:`AnchorSet`); ``features``: ``all`` or ``action``."""
    from policylens.store import StoreError

    path = Path(anchors)
    if not path.is_dir():
        raise FileNotFoundError(
            f"anchor cache {path} does not exist; build the teacher's bridge cache first "
            f"(`policylens cache build --policy POLICY --dataset droid:EPISODES --kind bridge --out {path}`)"
        )
    anchor_set = AnchorSet(path, model, features=features)
    if len(anchor_set) == 0:
        raise StoreError(f"anchor cache {path} holds no samples; rebuild it (`policylens cache build --kind bridge`)")
    batch = on_device(anchor_set.batch([0]), next(model.parameters()).device)
    inputs = {k: v for k, v in batch.items() if k not in ("target_features", "sample_index")}
    anchor_set.student(inputs, indices=batch["sample_index"])  # raises StoreError on another width
    if preload:
        anchor_set = AnchorSet(path, model, preload=True, features=features)
    return anchor_set


def _name(policy: str | Path | nn.Module) -> str:
    return str(policy) if isinstance(policy, (str, Path)) else type(policy).__name__


def _vla_config(config: RetainTrainConfig):
    from policylens.models import VLATrainConfig

    return VLATrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup,
        seed=config.seed,
        save_every=config.save_every,
        fit_normalization=False,  # the teacher's statistics: its features are the anchor
        replay_fraction=config.replay_fraction,
    )


OPTIONAL_SETTINGS = {"data.retain_every": 1, "data.anchor_features": "all"}  # their defaults


def _settings(
    policy: str | Path | nn.Module,
    anchors: str | Path,
    config: RetainTrainConfig,
    retention: RetentionConfig,
    run_settings: dict | None,
    task_stats: dict,
) -> dict:
    """The run's data settings as ``train_vla`` records them (beside the model and optimiser's)."""
    return {
        "policy": _name(policy),
        **(run_settings or {}),
        "anchors": str(anchors),
        "retention": asdict(retention),
        "anchor_batch_size": config.anchor_batch_size,
        "task_stats": task_stats,
        # recorded only when set, so earlier runs' settings still match and resume (OPTIONAL_SETTINGS)
        **({"retain_every": config.retain_every} if config.retain_every != 1 else {}),
        **({"anchor_features": config.anchor_features} if config.anchor_features != "all" else {}),
    }


def _summary(extra: dict, settings: dict, steps_run: int, steps: int) -> dict:
    """``retain.json`` from the saved step state (``extra``) and the run's recorded ``settings``."""
    series = {k: np.asarray(extra.get("series", {}).get(k, []), dtype=np.float64) for k in SERIES}
    dual = extra.get("retainer", {}).get("dual", {})
    retention = settings["retention"]
    tracked = method_type(retention["method"]).needs_retention  # plain fine-tuning computes no retention loss
    act, ret, fired, cos = (series[k] for k in SERIES)
    ret, fired = ret[np.isfinite(ret)], fired[np.isfinite(fired)]  # retention steps only (retain_every)
    return {
        "steps_run": steps_run,
        "steps": steps,
        "first_loss_act": float(act[0]) if len(act) else None,
        "final_loss_act": float(act[-1]) if len(act) else None,
        "lambda": dual.get("lam"),
        "lambda_history": dual.get("history", []),
        "projection_fired": float(np.minimum(fired, 1).mean()) if len(fired) and tracked else None,
        "final_loss_ret": float(ret[-1]) if len(ret) and tracked else None,
        "above_epsilon": float((ret > retention["epsilon"]).mean()) if len(ret) and tracked else None,
        "cos_dtheta_ret_mean": float(cos.mean()) if len(cos) else None,
        "cos_dtheta_ret_positive": float((cos > 0).mean()) if len(cos) else None,
        "epsilon": retention["epsilon"],
        "method": retention["method"],
        "task_stats": settings.get("task_stats"),
    }


def _write_summary(out: Path, summary: dict) -> None:
    """``retain.json``, replaced whole (other ranks may read it meanwhile)."""
    tmp = out / f"{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / SUMMARY_FILE)


def _finished(out: Path, steps: int, write: bool = True) -> dict | None:
    """The summary of the run in ``out`` if it has run ``steps`` steps or more (None otherwise):
    ``retain.json`` as it is, or rebuilt from the saved state when that file is missing or stale
    (and written there if ``write``)."""
    from policylens.runs import recorded_settings

    done = trained_steps(out)
    if done == 0 or done < steps:
        return None
    meta = json.loads((out / "train_state.json").read_text())
    saved = out / SUMMARY_FILE
    if saved.is_file():
        summary = json.loads(saved.read_text())
        if summary.get("steps_run") == done:
            return summary
    settings = recorded_settings(out)["data"]
    summary = _summary(meta.get("extra", {}), settings, done, done)
    if write:
        _write_summary(out, summary)
    return summary


def finished_message(out: str | Path, summary: dict) -> str:
    """The line that reports a finished run."""
    return f"already finished at step {summary['steps_run']}; results in {Path(out) / SUMMARY_FILE}"


def check_retain_out(
    out: str | Path,
    model: nn.Module,
    anchors: str | Path,
    config: RetainTrainConfig,
    retention: RetentionConfig,
    run_settings: dict | None = None,
    policy: str | Path | nn.Module | None = None,
    defaults: dict | None = None,
) -> dict | None:
    """Before the episodes are made: raise ``FileExistsError`` if ``out`` holds another run than
    these settings describe (those known without the episodes); return the run's summary if it
    has already run ``config.steps`` steps, None if there is training to do. ``defaults``: the
    ``run_settings`` keys recorded only when set, with their defaults (``{"data.dataset": None}``)."""
    from policylens.models import VLA_OPTIONAL_SETTINGS, run_settings_of
    from policylens.runs import check_run_dir

    name = policy if policy is not None else model
    settings = _settings(name, anchors, config, retention, run_settings, {"enabled": config.task_stats})
    known = run_settings_of(model, _vla_config(config), [], settings)
    for key in ("episodes", "steps_in_episodes"):  # counted from the episodes, unless the caller names them
        if key not in settings:
            known["data"].pop(key)
    optional = {**VLA_OPTIONAL_SETTINGS, **OPTIONAL_SETTINGS, **(defaults or {})}
    if not check_run_dir(out, known, partial=True, defaults=optional):
        return None
    return _finished(Path(out), config.steps)


def retain_train(
    policy: str | nn.Module,
    anchors: str | Path,
    episodes: list[dict],
    out: str | Path,
    config: RetainTrainConfig,
    retention: RetentionConfig,
    run_settings: dict | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    replay: list[dict] | None = None,
) -> dict:
    """Fine-tune ``policy`` (TinyVLA: a name, checkpoint or module) on ``episodes`` (the
    ``train_vla`` format) while retaining the bridge features cached at ``anchors``; ``replay``
    episodes (experience replay) fill ``config.replay_fraction`` of every batch's rows (episodes
    mixed into ``episodes`` instead are sampled like the task's). Resumable
    (model, optimiser, λ and the anchor draws); the final checkpoint and ``retain.json`` (steps
    run, first and last L_act, λ and its history, how often projection fired, L_ret against ε,
    what ``task_stats`` did) in ``out``, describing the whole run. A run that already ran
    ``config.steps`` steps is left as it is and its summary returned. ``run_settings``: how the
    episodes were made (recorded; a ``"policy"`` entry names a module). ``log(line)`` gets the
    one-line notes (task statistics, a finished run). Returns the summary.

    Under torchrun (``runs.distributed()``) ``config.batch_size`` and ``anchor_batch_size`` are
    global batches (multiples of the ranks); the model is trained on the device it is on (under nccl,
    the rank's GPU); rank 0 writes, every rank returns the summary."""
    from policylens.models import load_model, run_settings_of, train_vla
    from policylens.runs import TrainingInterrupted, check_run_dir

    say = log or (lambda line: None)
    d = ranks()
    main = d.main
    check_split(d.world, batch_size=config.batch_size, anchor_batch_size=config.anchor_batch_size)
    out = Path(out)
    torch.manual_seed(config.seed)
    model = load_model(policy) if isinstance(policy, (str, Path)) else policy
    anchor_set = open_anchors(anchors, model.eval(), config.preload_anchors, config.anchor_features)
    replay = list(replay or [])
    checks = check_task_stats(model, episodes + replay)
    changes = planned_task_stats(model, checks) if config.task_stats else None
    record = {"enabled": config.task_stats, "far": far_dims(checks), "adopted": changes or {}}
    settings = _settings(policy, anchors, config, retention, run_settings, record)
    train = _vla_config(config)
    if not overwrite and check_run_dir(out, run_settings_of(model, train, episodes, settings, replay)):
        summary = _finished(out, config.steps, write=main)
        if summary is not None:
            say(finished_message(out, summary))
            return summary
    if overwrite and main:
        (out / SUMMARY_FILE).unlink(missing_ok=True)  # another run's
    note = task_stats_message(checks, changes)
    if note:
        say(note)
    if changes:
        adopt_task_stats(model, checks)
    step = retention_step(task_retainer(model, anchor_set, retention), anchor_set, config)

    def write_summary() -> dict:
        done = trained_steps(out)
        summary = _summary(step.state_dict(), settings, done, config.steps)
        if main:
            _write_summary(out, summary)
        return summary

    try:
        train_vla(model, episodes, train, out, run_settings=settings, overwrite=overwrite, step=step, state=step,
                  replay=replay)  # fmt: skip
    except TrainingInterrupted:
        write_summary()  # the state saved at the interruption
        raise
    return write_summary()

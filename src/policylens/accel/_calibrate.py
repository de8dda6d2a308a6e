"""Calibration: record every branch output at every denoising step over many observations and
noise seeds, average the step-similarity matrices, build the schedule and measure its stability.

The outputs are recorded through :func:`policylens.tap.capture` (``modules=``: each branch's output
module by path, one record per call, float32 on CPU); accel itself installs no read hooks.
Observations are a tensor ``(N, ...)`` or a batch dict of tensors with N rows each (a VLA's
``make_batch``); only the blocks under the policy's cache root are recorded (a VLA's action expert).

Under torchrun (a process group that ``runs.distributed()`` joined) the calibration batches (one per
observation batch and noise seed, the same batches and noise as one process) are split over the ranks
in contiguous blocks; each rank sums its batches' weighted matrices (per batch: the mean over its
samples, weighted by its share of the samples) for the whole run and for each stability subset, and
one all-reduce adds the sums, so every rank holds one process's calibration up to float rounding
(never an average of averages). Every rank must hold the same policy and observations (checked)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from policylens.runs import Dist, shard
from policylens.tap import capture

from ._calibration import Calibration
from ._config import METRICS
from ._hash import model_hash
from ._metrics import step_matrices
from ._profiles import default_steps, policy_profile
from ._registry import Branch, discover_branches
from ._runtime import _STATES

Observations = Tensor | Mapping[str, Tensor]


def _default_run(policy: nn.Module, obs: Observations, generator: torch.Generator) -> None:
    """One denoising loop through the policy's loop method (``predict_action`` / ``sample_actions``)."""
    getattr(policy, policy_profile(policy).method)(obs, generator=generator)


def num_rows(observations: Observations) -> int:
    """N of a tensor ``(N, ...)`` or of a batch dict whose tensors all have N rows."""
    if isinstance(observations, Tensor):
        return len(observations)
    sizes = {k: len(v) for k, v in observations.items() if isinstance(v, Tensor)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"observations: the batch's tensors have different numbers of rows {sizes}; expected one N.")
    return next(iter(sizes.values()), 0)


def take_rows(observations: Observations, start: int, stop: int) -> Observations:
    if isinstance(observations, Tensor):
        return observations[start:stop]
    return {k: v[start:stop] if isinstance(v, Tensor) else v for k, v in observations.items()}


def _module_paths(policy: nn.Module, branches: list[Branch]) -> dict[str, str]:
    """Branch name -> path of its output module (the module the branch's value comes out of)."""
    paths: dict[int, str] = {}
    for path, module in policy.named_modules():
        paths.setdefault(id(module), path)
    return {b.name: paths[id(b.output)] for b in branches}


def _jaccard(a: list[int], b: list[int]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb)


@torch.no_grad()
def calibrate(
    policy: nn.Module,
    observations: Observations,
    num_updates: int = 10,
    metric: str = "cosine",
    n_bu: int = 0,
    batch_size: int = 8,
    num_seeds: int = 1,
    seed: int = 0,
    num_subsets: int = 2,
    keep_metrics: tuple[str, ...] = ("cosine", "l1"),
    run_fn: Callable[[nn.Module, Observations, torch.Generator], None] = _default_run,
    progress: bool = True,
    root: str | None = None,
) -> Calibration:
    """Calibrate BAC on ``observations`` (N, ...) or a batch dict: each batch of ``batch_size`` runs one
    full denoising loop per noise seed (``num_seeds`` seeds from ``seed``) through ``run_fn`` (default:
    the policy's loop method, ``policy.predict_action(obs, generator=g)`` or
    ``TinyVLA.sample_actions(batch, generator=g)``).

    ``root``: the submodule whose blocks are calibrated (``None``: the policy's profile, ``"expert"``
    for ``TinyVLA``; ``""``: every registered block); the branch names are paths from ``policy``.

    The schedule uses ``metric``; stability compares schedules made from ``num_subsets`` disjoint
    subsets of the calibration runs with the full one (per-branch Jaccard of update steps).
    ``progress`` shows a bar over denoising steps with the estimated time left.
    """
    for name, value in (("batch_size", batch_size), ("num_seeds", num_seeds), ("num_updates", num_updates)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"calibrate: {name}={value!r}; expected an int >= 1.")
    if n_bu < 0:
        raise ValueError(f"calibrate: n_bu={n_bu}; expected >= 0.")
    n_obs = num_rows(observations)
    if n_obs == 0:
        raise ValueError("calibrate: observations is empty; pass (N >= 1, ...) observation windows.")
    if metric not in METRICS:
        raise ValueError(f"calibrate: metric={metric!r}; expected one of {METRICS}.")
    keep = tuple(dict.fromkeys((*keep_metrics, metric, "l1")))
    bad = [m for m in keep if m not in METRICS]
    if bad:
        raise ValueError(f"calibrate: keep_metrics has unknown {bad}; expected names from {METRICS}.")
    profile = policy_profile(policy)
    root = profile.root if root is None else root
    branches = discover_branches(policy, root)
    if not branches:
        where = f" under root={root!r}" if root else ""
        raise ValueError(f"calibrate: no registered transformer blocks in {type(policy).__name__}{where}.")
    if policy in _STATES:
        raise RuntimeError("calibrate: BAC caching is applied to this policy; call remove_cache(policy) first.")
    if policy.training:
        raise ValueError("calibrate: policy is in training mode; call policy.eval() first.")
    # one record per denoising step: the branch output, on CPU in float32 as the similarity needs
    modules = _module_paths(policy, branches)
    jobs = [(s, i) for s in range(num_seeds) for i in range(0, n_obs, batch_size)]  # every rank's list
    sizes = [min(batch_size, n_obs - i) for _, i in jobs]
    groups = num_subsets if num_subsets >= 2 and len(jobs) >= num_subsets else 0
    totals = {"all": float(sum(sizes))}  # the weights of the whole run and of each stability subset
    totals.update({g: float(sum(sizes[g::groups])) for g in range(groups)})
    d = _ranks()
    _check_same_inputs(d, policy, observations)
    mine = shard(range(len(jobs)), d.rank, d.world)
    hint = default_steps(policy, profile)  # steps per run, known exactly after the first run
    bar = tqdm(
        total=len(mine) * hint if isinstance(hint, int) else None,
        desc=f"BAC calibration ({n_obs} obs x {num_seeds} seeds, batch {batch_size})",
        unit="step",
        disable=not (progress and d.main),
    )
    first = branches[0].name  # runs once per denoising step: it advances the bar

    def tick(name: str) -> None:
        if name == first:
            bar.update()

    sums: dict = {}  # "all" / subset g -> metric -> branch -> (K, K): sum of weight x the run's matrix
    K = None
    try:
        with capture(
            policy, modules=modules, dtype=torch.float32, device="cpu", missing="ignore", on_record=tick
        ) as cap:
            for j in mine:
                s, i = jobs[j]
                cap.clear()
                obs = take_rows(observations, i, i + batch_size)
                run_fn(policy, obs, torch.Generator(device="cpu").manual_seed(seed + 1000 * s + i))
                calls = {name: cap.calls(name) for name in modules}
                counts = {len(v) for v in calls.values()}
                if len(counts) != 1 or (K is not None and counts != {K}):
                    raise ValueError(f"calibrate: branches saw different step counts {sorted(counts)} (expected {K}).")
                if K is None and bar.total != len(mine) * next(iter(counts)):
                    bar.total = len(mine) * next(iter(counts))
                    bar.refresh()
                K = counts.pop()
                run: dict[str, dict[str, np.ndarray]] = {m: {} for m in keep}
                for name, v in calls.items():
                    feats = torch.stack([out.reshape(out.shape[0], -1) for out in v])  # (K, B, F)
                    for m, mat in step_matrices(feats, keep).items():  # (K, K)
                        run[m][name] = mat.numpy()
                for key in ("all", j % groups) if groups else ("all",):
                    _add(sums, key, np.float64(sizes[j]) / np.float64(totals[key]), run)
    finally:
        bar.close()
    K = _agree_steps(d, K)
    if K is None or K < 1:
        raise ValueError("calibrate: no denoising step was recorded; check observations and run_fn.")
    if d.active:
        sums = _all_reduce(d, sums, list(totals), keep, list(modules), K)

    common = {
        "num_steps": K,
        "block_names": [b.name for b in branches],
        "kinds": {b.name: b.kind for b in branches},
        "layers": {b.name: b.layer for b in branches},
        "model_hash": model_hash(policy),
        "metric": metric,
        "num_updates": min(num_updates, K),
        "n_bu": n_bu,
    }
    cal = Calibration(**common, matrices=sums["all"], num_samples=int(sum(sizes)))
    # subset g holds the runs j = g, g + num_subsets, ... (the indices _stability passes)
    cal.stability = _stability(cal, range(len(jobs)), lambda idx: sums[idx[0]], num_subsets, common)
    return cal


def _add(sums: dict, key, weight: np.float64, run: dict[str, dict[str, np.ndarray]]) -> None:
    """sums[key][metric][branch] += weight * run[metric][branch], in the runs' order (one process: the
    same float sums as a weighted mean of every run's matrices)."""
    acc = sums.setdefault(key, {m: {} for m in run})
    for m, mats in run.items():
        for name, mat in mats.items():
            term = weight * mat
            acc[m][name] = term if name not in acc[m] else acc[m][name] + term


def _ranks() -> Dist:
    """This process's place in the group ``runs.distributed()`` joined (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), backend=dist.get_backend())


def _fingerprint(policy: nn.Module, observations: Observations) -> str:
    """The policy's weights hash and a hash of the observations' values."""
    h = hashlib.sha256()
    items = {"": observations} if isinstance(observations, Tensor) else dict(observations)
    for key in sorted(items):
        value = items[key]
        if isinstance(value, Tensor):
            arr = value.detach().cpu().contiguous()
            h.update(f"{key}:{arr.dtype}:{tuple(arr.shape)}".encode())
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{key}:{value!r}".encode())
    return f"{model_hash(policy)}:{h.hexdigest()}"


def _check_same_inputs(d: Dist, policy: nn.Module, observations: Observations) -> None:
    """Under torchrun every rank must calibrate the same policy on the same observations."""
    if not d.active:
        return
    seen = d.all_gather(_fingerprint(policy, observations))
    other = next((r for r, f in enumerate(seen) if f != seen[0]), None)
    if other is not None:
        raise ValueError(
            f"calibrate: rank {other} of {d.world} holds another policy or other observations than rank 0; "
            "every rank must load the same policy and observations (the same --policy, --obs, --num-obs, --seed)"
        )


def _agree_steps(d: Dist, steps: int | None) -> int | None:
    """The step count every rank with a calibration batch saw (a rank without one takes theirs)."""
    if not d.active:
        return steps
    seen = sorted({k for k in d.all_gather(steps) if k is not None})
    if len(seen) > 1:
        raise ValueError(f"calibrate: the ranks saw different step counts {seen}; expected one.")
    return seen[0] if seen else None


def _all_reduce(d: Dist, sums: dict, keys: list, keep: tuple[str, ...], names: list[str], steps: int) -> dict:
    """Every rank's sums added (one all-reduce of a (keys, metrics, branches, K, K) float64 tensor)."""
    where = torch.device("cuda", torch.cuda.current_device()) if d.backend == "nccl" else torch.device("cpu")
    flat = torch.zeros(len(keys), len(keep), len(names), steps, steps, dtype=torch.float64)
    for a, key in enumerate(keys):
        for b, m in enumerate(keep):
            for c, name in enumerate(names):
                if key in sums:
                    flat[a, b, c] = torch.from_numpy(sums[key][m][name])
    flat = flat.to(where)
    dist.all_reduce(flat)
    flat = flat.cpu().numpy()
    return {key: {m: {n: flat[a, b, c] for c, n in enumerate(names)} for b, m in enumerate(keep)}
            for a, key in enumerate(keys)}  # fmt: skip


def _stability(cal: Calibration, runs, average, num_subsets: int, common) -> dict:
    if num_subsets < 2 or len(runs) < num_subsets:
        return {"num_subsets": 0, "note": f"needs >= {max(2, num_subsets)} calibration batches"}
    groups = [list(range(g, len(runs), num_subsets)) for g in range(num_subsets)]
    jac, same = [], []
    for idx in groups:
        sub = Calibration(**common, matrices=average(idx))
        per = [_jaccard(sub.schedule[n], cal.schedule[n]) for n in cal.block_names]
        jac.append(float(np.mean(per)))
        same.append(float(np.mean([sub.schedule[n] == cal.schedule[n] for n in cal.block_names])))
    return {
        "num_subsets": num_subsets,
        "mean_jaccard_vs_full": jac,
        "fraction_identical_vs_full": same,
    }

"""``train diffusion --dataset``: the options a run on disk data refuses, the policy it trains (the
suite's, or with ``--fit-dataset`` one sized from the data) and the run itself."""

from __future__ import annotations

from ._errors import CommandError

__all__ = ["check_dataset_options", "check_fit_dataset", "train_dataset"]


def check_dataset_options(dataset: str | None, camera_map: str | None, action_noise: float | None) -> None:
    """Options that a diffusion run on ``--dataset`` cannot honour, refused before any work."""
    if camera_map is not None:
        raise CommandError(
            f"--camera-map {camera_map}: the diffusion policies read a state vector, no camera; leave out "
            "--camera-map (it maps cameras for `train vla`)"
        )
    if dataset and action_noise is not None:
        raise CommandError(
            f"--dataset {dataset} with --action-noise: the noise is for simulated episodes; leave out --action-noise"
        )


def check_fit_dataset(fit: bool, *, dataset: str | None, suite: str, task: str | None) -> None:
    """``--fit-dataset`` sizes the policy from ``--dataset`` alone: without it, or with a suite, refused."""
    if not fit:
        return
    if not dataset:
        raise CommandError("--fit-dataset sizes the policy from --dataset; pass --dataset lerobot:PATH | droid:PATH")
    if suite == "metaworld" or task:
        raise CommandError(
            "--fit-dataset with --suite metaworld / --task: a policy sized from the data records no simulator task; "
            "leave out --fit-dataset to train the suite's policy, or --suite / --task to fit the data"
        )


def _dataset_config(dataset: str, suite: str, task: str | None, *, n_emb: int, n_layer: int, opened):
    """The policy config for a dataset run (the suite's, or with the ``opened`` episodes one sized from
    the data) and how to make data fit it."""
    from policylens.models.diffusion import REACH_CONFIG, DiffusionPolicyConfig, dataset_config, metaworld_config

    if opened is not None:
        return dataset_config(dataset, opened, n_emb=n_emb, n_layer=n_layer), ""
    if suite != "metaworld":
        hint = "record one with `policylens sim generate --task reach`, or size the policy from it with --fit-dataset"
        return DiffusionPolicyConfig(**REACH_CONFIG), hint
    if not task:
        raise CommandError(
            "--suite metaworld --dataset needs --task: the MetaWorld task the episodes show, e.g. --task pick-place-v3"
        )
    if "," in task:
        raise CommandError(f"--task {task}: train one policy per task; pass one task")
    try:  # checked where MetaWorld is installed; the dataset alone needs no simulator
        from policylens.sim.metaworld import check_task

        check_task(task, param="--task")
    except ImportError:
        pass
    hint = f"record one with `policylens sim generate --suite metaworld --task {task}`, or pass --fit-dataset"
    return metaworld_config(task, n_emb=n_emb, n_layer=n_layer), hint


def train_dataset(out: str | None, dataset: str, *, suite: str, task: str | None, episodes: int | None,
                   steps: int | None, n_emb: int, n_layer: int, fit: bool, batch_size, lr, seed, save_every,
                   overwrite, device, progress):  # fmt: skip
    """The suite's policy (or with ``fit`` one sized from the data) trained in ``out`` on ``dataset``'s state
    and actions (checked before any step); returns (policy, out dir)."""
    from policylens.data import open_episodes
    from policylens.models.diffusion import dataset_episodes, diffusion_loop_kwargs, train_diffusion_policy

    opened = open_episodes(dataset) if fit else None  # sized from the data: opened once for both uses
    config, hint = _dataset_config(dataset, suite, task, n_emb=n_emb, n_layer=n_layer, opened=opened)
    eps = dataset_episodes(config, dataset, episodes, hint=hint, opened=opened)
    if fit:
        out, steps = out or "runs/diffusion_dataset", steps or 6000
        data = {"dataset": dataset, "fit_dataset": True}
    elif suite == "metaworld":
        out, steps = out or f"runs/diffusion_metaworld/{config.task}", steps or 12000
        data = {"suite": "metaworld", "task": config.task, "dataset": dataset}
    else:
        out, steps, data = out or "runs/diffusion_reach", steps or 6000, {"task": "reach", "dataset": dataset}
    loop = diffusion_loop_kwargs(
        out, steps, batch_size=batch_size, lr=lr, save_every=save_every, run_settings=data, overwrite=overwrite,
        device=device,
    )  # fmt: skip
    return train_diffusion_policy(eps, config, steps=steps, seed=seed, progress=progress, **loop), out

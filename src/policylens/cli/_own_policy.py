"""The policies ``retain train`` and ``train vla`` fine-tune beyond TinyVLA: a LeRobot SmolVLA / pi0 /
pi0.5 checkpoint or a transformers PI0 / PI05 directory, trained through ``retain.policy_train`` on
episodes from disk (the policy's own training loss), with or without an anchor cache.
"""

from __future__ import annotations

from ._errors import CommandError

__all__ = ["check_anchors", "load_trainable_policy", "train_own_policy"]


def load_trainable_policy(policy: str):
    """The policy ``retain train`` / ``train vla`` fine-tune: a TinyVLA, or a LeRobot / transformers pi
    directory with ``training_loss`` (one line naming the policy otherwise)."""
    from policylens.models import TinyVLA, load_model
    from policylens.retain import check_trainable

    try:
        model = load_model(policy)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise CommandError(f"--policy {policy}: {exc}") from None
    if not isinstance(model, TinyVLA):
        try:
            check_trainable(model, f"--policy {policy}")
        except ValueError:
            raise CommandError(
                f"--policy {policy}: a {type(model).__name__}; retain train fine-tunes a TinyVLA, a LeRobot SmolVLA / "
                "pi0 / pi0.5 checkpoint directory or a transformers PI0 / PI05 directory (with training_loss)"
            ) from None
    return model


def check_anchors(anchors: str, model, features: str = "all") -> None:
    """The anchor cache opens for ``model`` with ``features`` (one line naming the cache otherwise)."""
    from policylens.retain import open_anchors
    from policylens.store import StoreError

    try:
        open_anchors(anchors, model.eval(), features=features)
    except (FileNotFoundError, StoreError) as exc:
        raise CommandError(f"--anchors: {exc}") from None


def train_own_policy(model, policy: str, own: dict, *, out, retention, config, overwrite, d, log) -> dict:
    """A LeRobot / transformers pi policy: task and replay episodes from disk, the generic loop."""
    anchors, replay_fraction = own["anchors"], own["replay_fraction"]
    from policylens.data import dataset_training_episodes
    from policylens.retain import PolicyTrainConfig, policy_train

    if own["task"] or own["replay_task"]:
        raise CommandError(
            f"--policy {policy}: --task / --replay-task record TinyVLA's simulated cameras; give this policy "
            "episodes from disk with --dataset / --replay-dataset lerobot:PATH | droid:PATH (and --camera-map)"
        )
    if not own["dataset"]:
        raise CommandError(f"--policy {policy}: pass the task data with --dataset lerobot:PATH | droid:PATH")
    if anchors is None and retention.method != "plain":
        raise CommandError(
            f"--method {retention.method} needs --anchors (a bridge cache of the teacher: `policylens cache build "
            f"--policy {policy} --kind bridge ...`); --method plain fine-tunes without one"
        )
    if bool(own["replay_dataset"]) != (replay_fraction > 0):
        raise CommandError(
            f"--replay-dataset {own['replay_dataset']} with --replay-fraction {replay_fraction}: with --policy DIR "
            "replay is a share of every batch; pass both (e.g. --replay-fraction 0.25) or neither"
        )
    if anchors is not None:
        check_anchors(anchors, model, config.anchor_features)
    eps = dataset_training_episodes(model, own["dataset"], own["camera_map"], episodes=own["episodes"])
    replay = []
    if own["replay_dataset"]:
        replay = dataset_training_episodes(
            model, own["replay_dataset"], own["camera_map"], episodes=own["replay_episodes"]
        )
    train = PolicyTrainConfig(
        steps=config.steps, batch_size=config.batch_size, anchor_batch_size=config.anchor_batch_size, lr=config.lr,
        seed=config.seed, replay_fraction=replay_fraction, retain_every=config.retain_every,
        preload_anchors=config.preload_anchors, anchor_features=config.anchor_features,
    )  # fmt: skip
    data = {k: own[k] for k in ("dataset", "replay_dataset", "camera_map", "episodes", "replay_episodes")}
    return policy_train(
        model.to(d.device), eps, out, config=train, retention=retention, anchors=anchors, replay=replay,
        run_settings=data,
        overwrite=overwrite, progress=d.main, log=log,
    )  # fmt: skip

"""The episode feed: episodes of any format -> a policy's inputs or training samples.

A policy reads named cameras (``config.cameras``) and a robot state of ``config.state_dim`` values,
and turns ``(images, instructions, state)`` into a model batch with ``make_batch``. A dataset may
name its cameras otherwise (a LeRobot dataset's ``side`` / ``wrist``): a *camera map*, dataset
camera -> policy camera (``{"side": "varied_camera_1"}``, or the CLI string
``side=varied_camera_1,wrist=hand_camera``), renames them; cameras it does not name are looked up
by the policy's name (``hand_camera``) or the LeRobot key ending (``observation.images.hand_camera``).

The robot state a policy reads is the episode's ``proprio`` (DROID and the simulators record the
7-D end-effector pose + gripper there; LeRobot's ``observation.state`` when a dataset has no
``observation.proprio``); :func:`robot_state` picks it from an observation dict and
:func:`training_samples` from recorded episodes. Every check raises :class:`FeedError` naming the
episode, the camera or size found, and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._episode import EpisodeFormatError

__all__ = [
    "MAP_FORM",
    "EpisodeFeed",
    "FeedError",
    "check_camera_map",
    "check_state_size",
    "dataset_training_episodes",
    "episode_cameras",
    "parse_camera_map",
    "robot_state",
    "training_samples",
]

MAP_FORM = "DATASET_CAMERA=POLICY_CAMERA[,...] (e.g. side=varied_camera_1,wrist=hand_camera)"


class FeedError(EpisodeFormatError):
    """An episode cannot feed a policy: a camera it reads is missing, a camera map is wrong, or the
    state has another size. The message names the episode, what was found and the fix."""


def parse_camera_map(text: str) -> dict[str, str]:
    """``"side=varied_camera_1,wrist=hand_camera"`` -> ``{"side": "varied_camera_1", "wrist": "hand_camera"}``
    (dataset camera -> policy camera)."""
    out: dict[str, str] = {}
    for item in filter(str.strip, text.split(",")):
        src, sep, dst = (part.strip() for part in item.partition("="))
        if not sep or not src or not dst:
            raise FeedError(f"camera_map={text!r}: entry {item.strip()!r} is not {MAP_FORM}.")
        if src in out:
            raise FeedError(f"camera_map={text!r}: dataset camera {src!r} is mapped twice; map it once.")
        out[src] = dst
    if not out:
        raise FeedError(f"camera_map={text!r} names no camera; expected {MAP_FORM}.")
    return out


def check_camera_map(camera_map: Mapping[str, str], policy_cameras: Sequence[str]) -> dict[str, str]:
    """``camera_map`` as a dict of strings, each target a camera the policy reads, none mapped twice."""
    camera_map = dict(camera_map or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in camera_map.items()):
        raise FeedError(f"camera_map={camera_map!r}: expected {{dataset camera: policy camera}} strings.")
    unknown = sorted({dst for dst in camera_map.values() if dst not in policy_cameras})
    if unknown:
        raise FeedError(
            f"camera_map maps onto {unknown}, which the policy does not read; its cameras are {list(policy_cameras)}."
        )
    targets = list(camera_map.values())
    twice = sorted({dst for dst in targets if targets.count(dst) > 1})
    if twice:
        raise FeedError(f"camera_map maps several dataset cameras onto {twice}; map one dataset camera to each.")
    return camera_map


def _where(ep, e: int | None) -> str:
    return f"episode {e} ({ep.path})" if e is not None else f"episode {ep.path}"


def episode_cameras(
    ep, policy_cameras: Sequence[str], camera_map: Mapping[str, str] | None = None, index: int | None = None
) -> dict[str, str]:
    """{policy camera: the episode's camera name} for one episode (``index``: its number, for messages)."""
    names = list(ep.camera_names)
    out: dict[str, str] = {}
    for src, dst in (camera_map or {}).items():
        found = ep.find_camera(src)
        if found is None:
            raise FeedError(
                f"camera_map names dataset camera {src!r}, but {_where(ep, index)} has cameras {names}; "
                f"map those: {MAP_FORM}."
            )
        out[dst] = found
    for cam in policy_cameras:
        if cam not in out:
            found = ep.find_camera(cam)
            if found is None:
                raise FeedError(
                    f"{_where(ep, index)} has no camera {cam!r} that the policy reads; it has {names}. "
                    f"Map a dataset camera onto it: camera_map={{'<dataset camera>': {cam!r}}} "
                    f"(CLI: --camera-map {names[0] if names else 'CAMERA'}={cam})."
                )
            out[cam] = found
    return {cam: out[cam] for cam in policy_cameras}  # in the policy's order


def check_state_size(ep, state_dim: int | None, index: int | None = None) -> None:
    """The episode's state (``ep.proprio``, (T, D)) has the ``state_dim`` values the policy reads."""
    got = np.shape(ep.proprio)[-1]
    if state_dim is not None and got != state_dim:
        raise FeedError(
            f"{_where(ep, index)} has a {got}-D state but the policy reads a {state_dim}-D state "
            f"(config.state_dim={state_dim}). Use a policy trained on {got}-D states, or give the dataset the "
            f"policy's {state_dim}-D state (LeRobot: an 'observation.proprio' column of {state_dim} values, which "
            "the reader prefers to 'observation.state')."
        )


class EpisodeFeed:
    """Episodes as a policy's inputs: every step of every episode, sample i = (episode, t) in order.

    ``model`` needs ``config.cameras``, ``config.state_dim`` (optional) and ``make_batch(images,
    instructions, state)``. Every episode's cameras and state size are checked here, before any
    frame is decoded. ``feed[i]`` is one sample's inputs without the batch dim; ``feed.batch(e, steps)``
    the inputs of several steps of one episode, with ``feed.frames`` / ``feed.states`` the raw arrays.
    """

    def __init__(self, model, episodes: Sequence, camera_map: Mapping[str, str] | None = None) -> None:
        for name in ("make_batch", "config"):
            if not hasattr(model, name):
                raise FeedError(f"the episode feed needs a policy with {name}; got {type(model).__name__}.")
        self.model, self.episodes = model, list(episodes)
        self.policy_cameras = list(model.config.cameras)
        self.camera_map = check_camera_map(camera_map or {}, self.policy_cameras)
        self.cameras = [episode_cameras(ep, self.policy_cameras, self.camera_map, e) for e, ep in enumerate(episodes)]
        for e, ep in enumerate(self.episodes):
            check_state_size(ep, getattr(model.config, "state_dim", None), e)
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep))]

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, e: int, steps: Sequence[int]) -> dict[str, np.ndarray]:
        """{policy camera: (n, H, W, 3) uint8} of episode ``e`` at ``steps``."""
        ep, cams = self.episodes[e], self.cameras[e]
        return {c: np.stack([np.asarray(ep.frame(cams[c], int(t))) for t in steps]) for c in self.policy_cameras}

    def states(self, e: int, steps: Sequence[int]) -> np.ndarray:
        """(n, state_dim) float32 robot states of episode ``e`` at ``steps``."""
        return np.stack([np.asarray(self.episodes[e].proprio[int(t)], dtype=np.float32) for t in steps])

    def batch(self, e: int, steps: Sequence[int], frames: Mapping[str, np.ndarray] | None = None) -> dict:
        """The model inputs (``make_batch``) of episode ``e`` at ``steps``, batch dim first (``frames``:
        those of :meth:`frames`, when the caller already read them)."""
        import torch

        frames = self.frames(e, steps) if frames is None else frames
        images = {c: torch.from_numpy(np.asarray(frames[c])) for c in self.policy_cameras}
        state = torch.from_numpy(self.states(e, steps))
        return self.model.make_batch(images, [self.episodes[e].instruction] * len(steps), state)

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[int(i)]
        return {k: v[0] for k, v in self.batch(e, [t]).items()}

    def training_episodes(self) -> list[dict]:
        """The episodes as trainers read them (``images`` {policy camera: frames, decoded lazily},
        ``state``, ``action``, ``instruction``), the action size checked against ``config.action_dim``."""
        want = getattr(self.model.config, "action_dim", None)
        out = []
        for e, ep in enumerate(self.episodes):
            got = np.shape(ep.actions)[-1]
            if want is not None and got != want:
                raise FeedError(
                    f"{_where(ep, e)} has {got}-D actions but the policy writes {want}-D actions "
                    f"(config.action_dim={want}); train a policy with action_dim={got} or convert the dataset's "
                    "actions."
                )
            images = {c: ep.frames(self.cameras[e][c]) for c in self.policy_cameras}
            state = np.asarray(ep.proprio, dtype=np.float32)
            out.append({"images": images, "state": state, "action": np.asarray(ep.actions, np.float32),
                        "instruction": ep.instruction})  # fmt: skip
        return out


def robot_state(obs: Mapping) -> np.ndarray:
    """The robot state a policy reads from an observation dict: ``proprio`` (simulators, DROID), else
    ``state`` (LeRobot's name)."""
    if "proprio" in obs:
        return np.asarray(obs["proprio"], dtype=np.float32)
    if "state" in obs:
        return np.asarray(obs["state"], dtype=np.float32)
    raise FeedError(f"the observation has no robot state: keys {sorted(obs)}; expected 'proprio' or 'state'.")


def training_samples(episodes: Sequence[Mapping]) -> list[dict]:
    """Recorded episodes (``images``, ``proprio``, ``action``, ``instruction``; the simulators'
    ``make_training_episodes``) -> the trainers' samples with the policy's names (``state`` for the
    robot state). Images and arrays are shared, not copied."""
    out = []
    for i, ep in enumerate(episodes):
        missing = [k for k in ("images", "action", "instruction") if k not in ep]
        if missing or not ("proprio" in ep or "state" in ep):
            raise FeedError(
                f"training episode {i} lacks {missing or ['proprio']}; record it with images "
                "(make_training_episodes(..., render=True))."
            )
        state = ep["proprio"] if "proprio" in ep else ep["state"]
        out.append({"images": ep["images"], "state": state, "action": ep["action"], "instruction": ep["instruction"]})
    return out


def dataset_training_episodes(
    model, dataset: str, camera_map: Mapping[str, str] | str | None = None, episodes: int | None = None
) -> list[dict]:
    """The first ``episodes`` (default: all) episodes of ``dataset`` (``droid:PATH``, ``lerobot:PATH`` or
    ``PATH``) as trainers read them, checked against ``model`` (cameras through ``camera_map``, state and
    action sizes) before any frame is decoded."""
    from ._open import open_episodes

    if isinstance(camera_map, str):
        camera_map = parse_camera_map(camera_map)
    found = open_episodes(dataset)
    if not found:
        raise FeedError(f"dataset {dataset!r} holds no episodes")
    if episodes is not None and episodes > len(found):
        raise FeedError(f"dataset {dataset!r} holds {len(found)} episodes; {episodes} were asked for (pass fewer)")
    return EpisodeFeed(model, found[:episodes], camera_map).training_episodes()

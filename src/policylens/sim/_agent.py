"""One closed-loop agent for every simulator: per-environment observation history and action-chunk queue.

A chunk policy predicts ``horizon`` actions from the last ``n_obs_steps`` observations; the agent
runs ``k`` of them (from index ``start``) one per control step, then predicts again. It drives one
environment (``act(obs) -> (A,)``, ``reset()``: the pybullet evaluator and generator) or many
(``act(observations, slots) -> (n, A)``, ``reset(slots)``: the MetaWorld evaluator); at a control
step every environment whose queue is empty gets its chunk from ONE predictor call over them.

Predictors come in two kinds. A batch predictor has ``predict_batch(windows, slots) -> (m, horizon, A)``
(``windows``: one list of the last ``n_obs_steps`` observations per environment, oldest first, the
first observation repeated at an episode start) and optionally ``reset(slots)``: :class:`DiffusionChunks`.
A predictor may also check each step's observations (``check_observations(observations)``).
Any other predictor is called on one observation at a time, ``predictor(obs)`` or
``predictor.predict_chunk(obs)`` -> ``(horizon, A)``, with an optional ``reset()``: TinyVLA, the
attention job's masked policy, align's action head.
"""

from __future__ import annotations

from collections import deque

import numpy as np

NOISE = ("episode", "run")


class ChunkedPolicy:
    """Run ``k`` actions of each predicted chunk, for one environment or a batch of them.

    ``action_dim`` (if given) is checked on every chunk; ``image_size`` / ``cameras`` record what
    the predictor reads (``None``: state only, or the simulator's defaults); ``calls`` counts predictor calls.
    """

    def __init__(
        self,
        predictor,
        k: int = 4,
        *,
        n_obs_steps: int = 1,
        start: int = 0,
        action_dim: int | None = 7,
        image_size: int | None = None,
        cameras: tuple[str, ...] | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k (actions executed per chunk) must be >= 1, got {k}")
        if n_obs_steps < 1 or start < 0:
            raise ValueError(f"n_obs_steps={n_obs_steps}, start={start}: expected n_obs_steps >= 1 and start >= 0")
        self.inner, self.k, self.n_obs_steps, self.start, self.action_dim = predictor, k, n_obs_steps, start, action_dim
        self.image_size, self.cameras = image_size, cameras
        self.batched = hasattr(predictor, "predict_batch")
        self.predict_one = getattr(predictor, "predict_chunk", predictor)
        self.history: dict[int, deque] = {}
        self.queue: dict[int, list[np.ndarray]] = {}
        self.calls = 0

    def bind(self, env) -> None:
        """Hand the environment to a predictor that reads it (e.g. camera calibration), if it wants it."""
        if hasattr(self.inner, "bind"):
            self.inner.bind(env)

    def reset(self, slots=0, episodes=None) -> None:
        """Start a new episode in ``slots`` (default: the one environment); ``episodes``: their indices
        in the evaluation (a batch predictor seeds its noise from them, so episode i draws the same
        noise in whatever slot it runs; default: each slot counts its own episodes)."""
        slots = np.atleast_1d(slots).tolist()
        for s in slots:
            self.history.pop(s, None)
            self.queue.pop(s, None)
        if hasattr(self.inner, "reset"):
            if not self.batched:
                self.inner.reset()
            elif episodes is None:
                self.inner.reset(slots)
            else:
                self.inner.reset(slots, episodes=np.atleast_1d(episodes).tolist())

    def act(self, observations, slots=None) -> np.ndarray:
        """``act(obs) -> (A,)`` for one environment, ``act(observations, slots) -> (n, A)`` for several."""
        if slots is None:
            return self._act([observations], [0])[0]
        slots = np.atleast_1d(slots).tolist()
        if len(observations) != len(slots):
            raise ValueError(f"{len(observations)} observations for {len(slots)} slots; pass one per slot")
        return self._act(list(observations), slots)

    def _act(self, observations: list, slots: list[int]) -> np.ndarray:
        check = getattr(self.inner, "check_observations", None)
        if check is not None:
            check(observations)
        for s, obs in zip(slots, observations, strict=True):
            if s not in self.history:
                self.history[s] = deque([obs] * self.n_obs_steps, maxlen=self.n_obs_steps)
            else:
                self.history[s].append(obs)
        need = [s for s in slots if not self.queue.get(s)]
        if need:
            windows = [list(self.history[s]) for s in need]
            if self.batched:
                chunks = np.asarray(self.inner.predict_batch(windows, need), dtype=np.float32)
            else:
                chunks = np.stack([np.asarray(self.predict_one(w[-1]), dtype=np.float32) for w in windows])
            self._check(chunks, len(need))
            for s, chunk in zip(need, chunks, strict=True):
                self.queue[s] = list(chunk[self.start : self.start + self.k])
            self.calls += 1
        return np.stack([self.queue[s].pop(0) for s in slots])

    def _check(self, chunks: np.ndarray, m: int) -> None:
        a = self.action_dim
        if chunks.ndim != 3 or len(chunks) != m or (a is not None and chunks.shape[2] != a):
            shape = tuple(chunks.shape[1:]) if len(chunks) == m else tuple(chunks.shape)
            raise ValueError(f"the predictor must return a (horizon, {a or 'A'}) chunk, got shape {shape}")
        if chunks.shape[1] <= self.start:
            raise ValueError(f"the predictor returned {chunks.shape[1]} actions; the agent runs them from {self.start}")


def _state(obs) -> np.ndarray:
    return np.asarray(obs["state"] if isinstance(obs, dict) else obs, dtype=np.float32)


class _EpisodeNoise:
    """Per-slot torch generators reseeded at each episode from ``seed`` and the episode index."""

    def __init__(self, seed: int) -> None:
        self.seed, self.episodes, self.generators = int(seed), {}, {}

    def reset(self, slots, episodes=None) -> None:
        import torch

        for k, s in enumerate(slots):
            self.episodes[s] = episodes[k] if episodes is not None else self.episodes.get(s, -1) + 1
            self.generators[s] = torch.Generator().manual_seed(self.seed * 1_000_003 + self.episodes[s])

    def generator(self, slot: int):
        if slot not in self.generators:
            self.reset([slot])
        return self.generators[slot]


class VLAChunks(_EpisodeNoise):
    """Batch predictor for a VLA with ``make_batch`` / ``sample_actions`` / ``noise_shape`` (TinyVLA):
    the newest observation of every environment that needs a chunk goes through ONE ``make_batch`` and
    ``sample_actions``; each environment's flow noise comes from its own generator, reseeded per
    episode, so episode i draws the same noise whatever the batch. ``predict_kwargs`` go to every
    ``sample_actions`` call (e.g. ``steps=5`` flow steps)."""

    def __init__(self, model, seed: int = 0, **predict_kwargs) -> None:
        super().__init__(seed)
        self.model, self.kwargs = model, predict_kwargs

    def predict_batch(self, windows: list[list], slots: list[int]) -> np.ndarray:
        import torch

        from ..data import robot_state

        obs = [w[-1] for w in windows]
        images = {
            c: torch.from_numpy(np.stack([np.asarray(o["images"][c]) for o in obs])) for c in self.model.config.cameras
        }
        state = torch.from_numpy(np.stack([robot_state(o) for o in obs]))
        batch = self.model.make_batch(images, [o["instruction"] for o in obs], state)
        shape = tuple(self.model.noise_shape)
        noise = torch.stack([torch.randn(shape, generator=self.generator(s)) for s in slots])
        return self.model.sample_actions(batch, noise=noise, **self.kwargs).numpy()


def vla_agent(model, seed: int = 0, k: int | None = None, **predict_kwargs) -> ChunkedPolicy:
    """A VLA (``make_batch`` / ``sample_actions``) as a :class:`ChunkedPolicy`: the first half of each
    ``chunk_size`` chunk (or ``k`` actions), at the policy's image size and cameras; ``predict_kwargs``
    go to ``sample_actions`` (e.g. ``steps=5``)."""
    cfg = model.config
    k = k or max(1, getattr(cfg, "chunk_size", 8) // 2)
    predictor = VLAChunks(model, seed, **predict_kwargs)
    return ChunkedPolicy(
        predictor, k, image_size=getattr(cfg, "image_size", None), cameras=getattr(cfg, "cameras", None)
    )


class DiffusionChunks:
    """Batch predictor for a state-based ``TinyDiffusionPolicy`` (``predict_action(obs (B, To, O))``).

    ``noise="episode"``: each environment's generator is reseeded at every ``reset`` from ``seed``
    and its episode count, so every caching mode sees the same noise in episode i (one policy call
    per environment). ``noise="run"``: one generator seeded once and one call over all environments
    that need a chunk; deterministic for a given batch size.
    """

    def __init__(self, policy, seed: int = 0, noise: str = "run", **predict_kwargs) -> None:
        import torch

        if noise not in NOISE:
            raise ValueError(f"noise={noise!r}: choose from {NOISE}")
        self.policy, self.seed, self.noise, self.kwargs = policy, int(seed), noise, predict_kwargs
        self.generator = torch.Generator().manual_seed(self.seed)
        self.per_episode = _EpisodeNoise(seed)

    def reset(self, slots, episodes=None) -> None:
        self.per_episode.reset(slots, episodes)

    def check_observations(self, observations: list) -> None:
        """Every control step, before the history takes them: states of the policy's ``obs_dim``."""
        obs_dim = self.policy.config.obs_dim
        states = np.stack([_state(o) for o in observations])
        if states.ndim != 2 or states.shape[1] != obs_dim:
            raise ValueError(f"states has shape {states.shape}; expected ({len(observations)}, obs_dim={obs_dim})")

    def predict_batch(self, windows: list[list], slots: list[int]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.stack([np.stack([_state(o) for o in w]) for w in windows]))  # (m, To, O)
        if self.noise == "run":
            return self.policy.predict_action(x, generator=self.generator, **self.kwargs).numpy()
        rows = [
            self.policy.predict_action(x[i : i + 1], generator=self.per_episode.generator(s), **self.kwargs)[0]
            for i, s in enumerate(slots)
        ]
        return torch.stack(rows).numpy()


def diffusion_agent(
    policy, seed: int = 0, noise: str = "run", n_action_steps: int | None = None, **predict_kwargs
) -> ChunkedPolicy:
    """A ``TinyDiffusionPolicy`` as a :class:`ChunkedPolicy`: windows of ``n_obs_steps`` states, the
    chunk's ``n_action_steps`` actions (default: the config's) from the current step on."""
    c = policy.config
    k = n_action_steps or c.n_action_steps
    if not 1 <= k <= c.horizon - c.n_obs_steps + 1:
        raise ValueError(
            f"n_action_steps={k}: expected 1..{c.horizon - c.n_obs_steps + 1} (horizon {c.horizon} - "
            f"n_obs_steps {c.n_obs_steps} + 1)"
        )
    predictor = DiffusionChunks(policy, seed=seed, noise=noise, **predict_kwargs)
    return ChunkedPolicy(predictor, k, n_obs_steps=c.n_obs_steps, start=c.n_obs_steps - 1, action_dim=c.action_dim)

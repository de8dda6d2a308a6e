"""Every random state a loop draws from, without pickle: torch's CPU generator and each CUDA
device's (uint8 tensors, for safetensors), numpy's and Python's global generators (JSON), and the
loop's own generators (its batch order, noise, row subsets) passed by name. Reading a state draws
nothing, so saving it does not change what the run draws next.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["Generators", "join_generators", "restore_rng_state", "rng_state"]

Generators = Mapping[str, "torch.Generator | np.random.Generator"]


def _listed(x: object) -> object:  # numpy arrays inside a bit generator's state (MT19937's key)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} in a random state is not JSON-ready")


def rng_state(generators: Generators | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random state the run draws from, as ``(tensors, json)``: torch's CPU generator
    (``rng.torch``) and each CUDA device's (``rng.cuda.{i}``), numpy's and Python's global generators,
    and ``generators`` by name (a ``torch.Generator`` as ``rng.gen.{name}``, a numpy ``Generator`` as
    its bit generator's state). Nothing is drawn."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    meta: dict = {
        "numpy": [name, key.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
        "numpy_generators": {},
    }
    for k, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            tensors[f"rng.gen.{k}"] = g.get_state()
        elif isinstance(g, np.random.Generator):
            meta["numpy_generators"][k] = json.loads(json.dumps(g.bit_generator.state, default=_listed))
        else:
            raise TypeError(f"generators[{k!r}] is a {type(g).__name__}; pass a torch.Generator or numpy Generator")
    return tensors, meta


def restore_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping, generators: Generators | None = None) -> None:
    """Set the states :func:`rng_state` returned: the global generators, and ``generators`` in place
    (each must be in the state, saved under the same name)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng.cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)
    name, key, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, np.asarray(key, np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))
    for k, g in (generators or {}).items():
        if isinstance(g, torch.Generator) and f"rng.gen.{k}" in tensors:
            g.set_state(tensors[f"rng.gen.{k}"])
        elif isinstance(g, np.random.Generator) and k in meta["numpy_generators"]:
            g.bit_generator.state = meta["numpy_generators"][k]
        else:
            saved = sorted(
                [t[len("rng.gen.") :] for t in tensors if t.startswith("rng.gen.")] + list(meta["numpy_generators"])
            )
            raise ValueError(
                f"the training state holds no {type(g).__name__} {k!r} (it holds {saved}); it was written by "
                "another version of this loop: pass --overwrite (overwrite=True) to start the run again"
            )


def join_generators(generators: Generators | None, **own: torch.Generator | np.random.Generator) -> dict:
    """A step's ``generators`` and the loop's ``own`` in one mapping to save; a name may not be both."""
    clash = sorted(set(generators or {}) & set(own))
    if clash:
        raise ValueError(f"generators: {clash} name the loop's own generators; name the step's another way")
    return {**(generators or {}), **own}

"""The retention update written out independently of the package: every gradient flattened into
one list of Python floats (float64, zeros for a missing gradient), dot products by explicit
sums, one rule per function. The tests compare the package's per-parameter, float32 code with
these."""

import math

import torch


def flat(grads, shapes) -> list[float]:
    """One float64 list over all parameters; a missing (None) gradient is zeros of its shape."""
    out: list[float] = []
    for g, shape in zip(grads, shapes, strict=True):
        n = math.prod(shape)
        out += [0.0] * n if g is None else [float(v) for v in g.detach().double().flatten()]
    return out


def dot(u: list[float], v: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(u, v, strict=True))


def axpy(u: list[float], c: float, v: list[float]) -> list[float]:
    """u + c·v"""
    return [x + c * y for x, y in zip(u, v, strict=True)]


def agem(g: list[float], r: list[float], delta: float = 0.0, active: bool = True) -> list[float]:
    """g − ⟨g, r⟩/(‖r‖² + δ)·r where ⟨g, r⟩ < 0 (and ``active``), else g."""
    d = dot(g, r)
    if not active or d >= 0:
        return list(g)
    return axpy(g, -d / (dot(r, r) + delta), r)


def pcgrad(a: list[float], b: list[float]) -> list[float]:
    """a − min(0, ⟨a, b⟩)/‖b‖²·b + b − min(0, ⟨b, a⟩)/‖a‖²·a, both against the originals."""
    ab = dot(a, b)
    pa = axpy(a, -min(0.0, ab) / dot(b, b), b)
    pb = axpy(b, -min(0.0, ab) / dot(a, a), a)
    return [x + y for x, y in zip(pa, pb, strict=True)]


def update(method: str, projection: str, g_act, g_ret, lam: float, l_ret: float, epsilon: float) -> list[float]:
    """The combined gradient of one step (flat lists in, flat list out)."""
    if method == "plain":
        return list(g_act)
    if method == "pcgrad":
        return pcgrad(g_act, [lam * y for y in g_ret])
    if method == "fixed":
        return axpy(g_act, lam, g_ret)
    if projection == "conflict":  # g_act off g_ret, then + λ g_ret
        return axpy(agem(g_act, g_ret), lam, g_ret)
    return agem(axpy(g_act, lam, g_ret), g_ret, active=l_ret > epsilon)  # the whole step, over budget only


def unflatten(values: list[float], shapes) -> list[torch.Tensor]:
    out, k = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(torch.tensor(values[k : k + n], dtype=torch.float64).reshape(shape))
        k += n
    return out

"""What a store can hold: the store-kind and recipe registries, filled by the modules that write them.

A *kind* says which feature field a store has and its per-sample rank; the store keeps three
generic ones (``hidden_feature``, ``hidden_state``, ``token_level``) and a job adds its own with
:func:`register_store_kind`. A *recipe* is a job's way of computing a kind's features (which
layers, positions, pooling); :func:`register_recipe` names it, the kind it writes and the job's
functions for it by role (``hooks``), so code that reads such a store asks the store for them
(:func:`recipe_hook`) without importing the job. A recipe's settings are the job's own JSON:
the manifest keeps them opaque under ``meta[<recipe name>]``.

The manifest names the packages that registered its kind and recipe (``modules``), and reading
it imports them, so a store of a job's kind opens in a process that never imported the job.
Only ``policylens.*`` packages are imported that way; another package must be imported by the
caller. Manifests written before that record are served by importing policylens's subpackages
in turn (those whose source quotes the missing name first) until one registers it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import StoreError

__all__ = [
    "KINDS",
    "RECIPES",
    "Recipe",
    "StoreKind",
    "kind_of_fields",
    "manifest_modules",
    "recipe_hook",
    "recipe_settings",
    "register_recipe",
    "register_store_kind",
    "resolve_kind",
]


class StoreKind(NamedTuple):
    """A store kind: its feature ``field`` (the one that identifies it on open), the per-sample
    ``rank`` of that field, a one-line ``description``, and the ``module`` that registered it
    (``None``: the store's own)."""

    field: str
    rank: int
    description: str
    module: str | None = None


class Recipe(NamedTuple):
    """A job's recipe for the features of a ``kind``: the ``module`` that registered it, and its
    functions by role (``hooks``, e.g. ``{"student": ..., "source": ...}``)."""

    kind: str
    module: str
    hooks: Mapping[str, Callable[..., Any]]


KINDS: dict[str, StoreKind] = {
    "hidden_feature": StoreKind("target_features", 1, "target_features [D]: one pooled vector per sample"),
    "hidden_state": StoreKind("teacher_hidden", 3, "teacher_hidden [n_layers, n_vecs, D]"),
    "token_level": StoreKind("labels", 1, "labels [seq_len]"),
}
RECIPES: dict[str, Recipe] = {}


def _dotted(module: Any) -> bool:
    return isinstance(module, str) and all(p.isidentifier() for p in module.split("."))


def _check_module(module: str, where: str) -> None:
    if not _dotted(module):
        raise StoreError(f"{where}: module={module!r}; expected the dotted name of the registering package.")


def register_store_kind(name: str, *, field: str, rank: int, description: str, module: str) -> None:
    """Add the store kind ``name`` whose feature field ``field`` has per-sample rank ``rank``.

    ``module``: the package that registers it (its import must call this); manifests of the
    kind record it so that opening one imports it. The same module may register a kind again (a
    reload replaces it); a name another module registered, or a feature field another kind
    already uses (the field decides the kind on open), is an error."""
    where = f"register_store_kind({name!r})"
    _check_module(module, where)
    if not name or not isinstance(name, str):
        raise StoreError(f"{where}: name must be a non-empty string.")
    if int(rank) < 1:
        raise StoreError(f"{where}: rank={rank}; expected >= 1.")
    kind = StoreKind(str(field), int(rank), str(description), module)
    if name in KINDS and KINDS[name].module != module:
        raise StoreError(f"{where}: kind {name!r} is already registered by {KINDS[name].module}; pick another name.")
    taken = [k for k, v in KINDS.items() if v.field == kind.field and k != name]
    if taken:
        raise StoreError(
            f"{where}: field {field!r} is kind {taken[0]!r}'s feature field; a kind needs a field of its own "
            "so that it is detected on open."
        )
    KINDS[name] = kind


def register_recipe(name: str, *, kind: str, module: str, **hooks: Callable[..., Any]) -> None:
    """Add the recipe ``name`` for stores of ``kind``, with its functions by role (``hooks``).

    A store built with it records its settings under ``meta[name]`` (``StoreMeta(recipe={name:
    settings})``) and ``module`` in the manifest. A name another module registered is an error."""
    where = f"register_recipe({name!r})"
    _check_module(module, where)
    if kind not in KINDS:
        raise StoreError(f"{where}: kind={kind!r} is not a store kind; expected one of {sorted(KINDS)}.")
    if not all(callable(h) for h in hooks.values()):
        raise StoreError(f"{where}: every hook must be callable; got {sorted(hooks)}.")
    if name in RECIPES and RECIPES[name].module != module:
        raise StoreError(f"{where}: recipe {name!r} is already registered by {RECIPES[name].module}; pick another.")
    RECIPES[name] = Recipe(kind, module, dict(hooks))


def kind_of_fields(names: list[str] | set[str] | dict) -> str | None:
    """Detect the store kind from the field names present (``None`` if no registered kind matches).

    Given a manifest's ``{name: spec}``, only feature fields count (role ``feature``, the default),
    so a stored input that happens to share a kind's field name (``xyz``) does not confuse it."""
    if isinstance(names, dict):
        names = [k for k, v in names.items() if not isinstance(v, dict) or v.get("role", "feature") == "feature"]
    found = [k for k, v in KINDS.items() if v.field in names]
    return found[0] if len(found) == 1 else None


def manifest_modules(kind: str, recipes: Mapping[str, Any] | None = None) -> list[str]:
    """The packages a manifest of ``kind`` built with ``recipes`` names (imported when it is read)."""
    mods = {KINDS[kind].module} | {RECIPES[r].module for r in recipes or {}}
    return sorted(m for m in mods if m)


def _import_for(table: Mapping[str, Any], name: str, manifest: Mapping[str, Any]) -> str:
    """Import what ``manifest`` names (``policylens.*`` only) until ``table`` holds ``name``; a
    manifest without the record gets policylens's subpackages imported in turn. Returns the
    import failures of the named modules, as a hint for the error ("" if none)."""
    modules, failed = manifest.get("modules"), []
    named = modules is not None
    if not named:  # written before manifests named their modules
        modules = [f"policylens.{p}" for p in _packages_by_mention(name)]
    for module in modules:
        if name in table:
            break
        if _dotted(module) and module.startswith("policylens."):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                failed.append(f"{module}: {exc}")
    return f" (importing {'; '.join(failed)})" if named and failed else ""


def _packages_by_mention(name: str) -> list[str]:
    """policylens's subpackages, those whose source quotes ``name`` first (the one that registers
    it, without importing unrelated heavy ones before it)."""
    root = Path(__file__).resolve().parents[1]
    packages = sorted(m.name for m in pkgutil.iter_modules([str(root)]) if m.ispkg)
    quoted = (f'"{name}"', f"'{name}'")

    def mentions(package: str) -> bool:
        return any(q in p.read_text() for p in (root / package).rglob("*.py") for q in quoted)

    return sorted(packages, key=lambda p: not mentions(p))


def resolve_kind(manifest: Mapping[str, Any], where: str) -> StoreKind:
    """The registered kind of ``manifest`` (importing the package its manifest names if needed)."""
    kind, failed = manifest.get("kind"), ""
    if isinstance(kind, str) and kind not in KINDS:
        failed = _import_for(KINDS, kind, manifest)
    if kind not in KINDS:
        named = manifest.get("modules")
        hint = f" (its manifest names {named})" if named else ""
        raise StoreError(
            f"{where}: field 'kind' is {kind!r}, which no imported module registers{hint}{failed}; known kinds are "
            f"{sorted(KINDS)}. Import the package that wrote the store, or rebuild it."
        )
    return KINDS[kind]


def recipe_settings(manifest: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The settings ``meta[name]`` that recipe ``name`` recorded in ``manifest`` (``None``: not built with it)."""
    settings = (manifest.get("meta") or {}).get(name)
    return settings if isinstance(settings, dict) else None


def recipe_hook(manifest: Mapping[str, Any], name: str, role: str, where: str = "store") -> Callable[..., Any]:
    """Recipe ``name``'s function for ``role`` (e.g. ``"student"``) for the store of ``manifest``,
    importing the package that registered it when the manifest names it."""
    if recipe_settings(manifest, name) is None:
        meta = manifest.get("meta") or {}
        raise StoreError(
            f"{where} was not built with recipe {name!r} (kind={manifest.get('kind')!r}, "
            f"pooling={meta.get('pooling')!r}); no meta.{name} in its manifest."
        )
    failed = _import_for(RECIPES, name, manifest) if name not in RECIPES else ""
    if name not in RECIPES:
        raise StoreError(
            f"{where}: recipe {name!r}, which its manifest records, is registered by no imported module (its "
            f"manifest names {manifest.get('modules')}){failed}; import the package that wrote the store."
        )
    hooks = RECIPES[name].hooks
    if role not in hooks:
        raise StoreError(f"{where}: recipe {name!r} has no {role!r} function; it has {sorted(hooks)}.")
    return hooks[role]

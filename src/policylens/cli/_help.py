"""Help pages in click's familiar notation, whatever typer renders by default.

typer 0.2x replaced click by a vendored copy and draws parameter types its own way:
``<int>``, ``<list[int]>``, ``{model}`` for a required argument in the usage line, and,
in the Rich panel only, ``<bool>`` after every flag (``--help <bool>``, ``--repair
--no-repair <bool>``): its plain formatter skips flags, the Rich one does not.
:func:`classic_help` switches the parameters of a command tree to subclasses that render
``--seed INTEGER``, ``--mode [original|uniform|optimal]``, ``MODEL`` and flags without a
type. Older typer versions use click's own parameters, which already render that way;
their parameters are left alone.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from typer.core import TyperArgument, TyperOption

__all__ = ["classic_help", "type_label"]

_NAMES = {
    "int": "INTEGER",
    "float": "FLOAT",
    "str": "TEXT",
    "bool": "BOOLEAN",
    "path": "PATH",
    "int range": "INTEGER RANGE",
    "float range": "FLOAT RANGE",
}
_NEW_TYPER = hasattr(TyperOption, "display_type") and hasattr(TyperArgument, "_usage_display_name")


def type_label(param: Any, ctx: Any) -> str:
    """click-style type label of a typer parameter: INTEGER, PATH, [a|b|c], INTEGER RANGE."""
    label = str(param.display_type(ctx)).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[len("list[") : -1]
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.is_choice:
        return f"[{label}]"
    return _NAMES.get(label, label.upper())


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        label = type_label(self, ctx)
        return f"{label}..." if self.nargs != 1 else label


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return type_label(self, ctx)

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name


def _help_option(command: Any) -> Any:
    """The command's ``--help`` option: click builds it on first use and caches it; build it now."""
    names = (command.context_settings or {}).get("help_option_names", ["--help"])
    return command.get_help_option(SimpleNamespace(help_option_names=names))


def classic_help(command: Any) -> None:
    """Switch every typer parameter of ``command`` and its subcommands to click's notation."""
    if not _NEW_TYPER:
        return
    for param in [*command.params, _help_option(command)]:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    for sub in getattr(command, "commands", {}).values():
        classic_help(sub)

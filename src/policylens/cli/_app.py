"""The typer app every ``policylens`` command group is built with: errors and help in one place.

:class:`PolicylensGroup` wraps the invocation of whatever subcommand runs: a known error
(see ``_errors``) becomes one ``error: ...`` line on stderr and exit status 2, unless the
root's ``--debug`` or ``POLICYLENS_DEBUG=1`` asks for the traceback; any other error keeps
typer's traceback (without local variables, which would print whole tensors). Before it
runs it switches the help pages to click's notation (``_help``).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from ._errors import EXIT_KNOWN, debug_from_env, format_known_error, is_known_error
from ._help import classic_help

__all__ = ["PolicylensGroup", "new_app"]

# Exit / Abort / click's usage errors carry their own handling.
_PASS_THROUGH = (
    typer.Exit,
    typer.Abort,
    *(c for c in typer.BadParameter.__mro__ if c.__name__ in ("ClickException", "TyperException")),
)


def _debug(ctx: Any) -> bool:
    return bool(ctx.find_root().params.get("debug")) or debug_from_env()


class PolicylensGroup(TyperGroup):
    """A typer group whose subcommands report known errors in one line (exit 2)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        classic_help(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if _debug(ctx) or not is_known_error(exc):
                raise
            typer.echo(f"{format_known_error(exc)} (--debug shows the traceback)", err=True)
            raise typer.Exit(EXIT_KNOWN) from None


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` with :class:`PolicylensGroup`, help on no arguments, no local-variable dumps."""
    kwargs.setdefault("no_args_is_help", True)
    return typer.Typer(cls=PolicylensGroup, help=help, pretty_exceptions_show_locals=False, **kwargs)

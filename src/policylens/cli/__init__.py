"""cli: the ``policylens`` command; each subcommand is a few lines around a library function."""

from ._errors import CommandError, register_known_error

__all__ = ["CommandError", "register_known_error"]

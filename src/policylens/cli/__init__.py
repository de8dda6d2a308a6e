"""cli: the ``policylens`` command; each subcommand is a few lines around a library function."""

__all__: list[str] = []

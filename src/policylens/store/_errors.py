"""The one exception type the store raises, so callers can catch store problems precisely."""


class StoreError(ValueError):
    """A feature store is missing, damaged, incomplete or does not match what was asked for.

    The message always names the store path, the field or file involved, what was found,
    what was expected and how to fix it.
    """

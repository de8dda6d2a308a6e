"""policylens: look inside VLA and diffusion robot policies.

Subpackages: ``tap`` (capture), ``store`` (feature store), ``data`` (episodes),
``models`` (adapters and reference policies), ``accel`` (diffusion caching).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""broaden: an active-learning ML backend for Label Studio. The `broaden` command lives here."""

from backend import __version__

__all__ = ["__version__"]

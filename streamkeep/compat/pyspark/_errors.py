"""The facade's "not supported" errors and the ``__getattr__`` every facade class uses.

Anything PySpark offers that the facade does not raises `UnsupportedFeatureError`
(a `NotImplementedError`) naming the feature, never an `AttributeError`, so a
migrating user learns at once what to change. Imports nothing from streamkeep.
"""

from __future__ import annotations

from typing import Any, NoReturn

GUIDE = "docs/migration-from-pyspark.md"


class UnsupportedFeatureError(NotImplementedError):
    """A PySpark feature that streamkeep's PySpark facade does not support."""


class UnsupportedModuleError(UnsupportedFeatureError, ModuleNotFoundError):
    """A PySpark module the facade does not provide (also an ImportError, so
    ``try: import pyspark.sql`` / ``except ImportError`` keeps working)."""


def unsupported(what: str, why: str = "") -> NoReturn:
    """Raise `UnsupportedFeatureError` for the PySpark feature `what`."""
    reason = f": {why}" if why else ""
    msg = f"{what} is not supported by streamkeep's PySpark facade{reason}. See {GUIDE} for the alternatives."
    raise UnsupportedFeatureError(msg)


def missing_attribute(owner: str, name: str, known: dict[str, str]) -> Any:
    """What a facade's ``__getattr__`` does for `name`, which the class does not define.

    Private and dunder names raise AttributeError (Python's protocols probe them);
    every other name raises UnsupportedFeatureError, with the reason when `known`
    lists it as a PySpark feature the facade leaves out.
    """
    if name.startswith("_"):
        msg = f"{owner!r} object has no attribute {name!r}"
        raise AttributeError(msg)
    why = known.get(name)
    if why is None:
        unsupported(f"{owner}.{name}", "it is not part of the PySpark API the facade covers")
    unsupported(f"{owner}.{name}", why)


__all__ = ["UnsupportedFeatureError", "UnsupportedModuleError", "missing_attribute", "unsupported"]

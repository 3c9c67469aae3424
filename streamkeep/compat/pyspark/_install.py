"""`install()`: make ``import pyspark`` (and its streaming modules) resolve to the facade.

Registers module objects under PySpark's module names in ``sys.modules``, with
PySpark's layout (``pyspark``, ``pyspark.streaming``, ``pyspark.streaming.kafka``,
...), and a finder that answers any other ``pyspark.*`` import with a clear
`UnsupportedModuleError` (a NotImplementedError and an ImportError).
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

from streamkeep.compat.pyspark._aliases import UNSUPPORTED, UNSUPPORTED_MODULES
from streamkeep.compat.pyspark._errors import GUIDE, UnsupportedModuleError, missing_attribute
from streamkeep.errors import ConfigError

_MARK = "__streamkeep_facade__"
_lock = threading.Lock()


def _layout(ns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def pick(*names: str) -> dict[str, Any]:
        return {n: ns[n] for n in names}

    return {
        "pyspark": pick("SparkConf", "SparkContext", "RDD", "StorageLevel", "Broadcast", "Accumulator", "AccumulatorParam"),
        "pyspark.conf": pick("SparkConf"),
        "pyspark.context": pick("SparkContext"),
        "pyspark.rdd": pick("RDD", "portable_hash"),
        "pyspark.storagelevel": pick("StorageLevel"),
        "pyspark.broadcast": pick("Broadcast"),
        "pyspark.accumulators": pick("Accumulator", "AccumulatorParam"),
        "pyspark.streaming": pick("StreamingContext", "DStream", "StreamingListener"),
        "pyspark.streaming.context": pick("StreamingContext"),
        "pyspark.streaming.dstream": pick("DStream"),
        "pyspark.streaming.listener": pick("StreamingListener"),
        "pyspark.streaming.kafka": pick(
            "KafkaUtils", "TopicAndPartition", "OffsetRange", "Broker", "KafkaMessageAndMetadata", "utf8_decoder"
        ),
    }


def _module_getattr(modname: str) -> Callable[[str], Any]:
    known = UNSUPPORTED["pyspark"] if modname == "pyspark" else {}

    def __getattr__(name: str) -> Any:
        sub = f"{modname}.{name}"
        if sub in UNSUPPORTED_MODULES:
            _raise_module(sub)
        return missing_attribute(f"module {modname}", name, known)

    return __getattr__


def _raise_module(fullname: str) -> None:
    why = next((w for m, w in UNSUPPORTED_MODULES.items() if fullname == m or fullname.startswith(m + ".")), None)
    reason = why or "the facade covers pyspark, pyspark.streaming and pyspark.streaming.kafka"
    msg = f"{fullname} is not supported by streamkeep's PySpark facade: {reason}. See {GUIDE}."
    err = UnsupportedModuleError(msg)
    err.name = fullname
    raise err


class _Finder:
    """Answers imports of PySpark modules the facade does not provide."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> None:
        if fullname.startswith("pyspark.") and sys.modules.get("pyspark") is not None and getattr(sys.modules["pyspark"], _MARK, False):
            _raise_module(fullname)
        return None


_finder = _Finder()


def install() -> None:
    """Make ``import pyspark``, ``pyspark.streaming`` and ``pyspark.streaming.kafka`` resolve to the facade.

    Call it before the program imports pyspark (``streamkeep run --pyspark app.py``
    does; in a script, ``import streamkeep.compat.pyspark.auto`` does it in one line).
    Calling it again has no effect.

    Raises:
        ConfigError: the real pyspark was imported already.
    """
    import streamkeep.compat.pyspark as facade

    with _lock:
        existing = sys.modules.get("pyspark")
        if existing is not None:
            if getattr(existing, _MARK, False):
                return
            msg = "the real pyspark is already imported; call streamkeep.compat.pyspark.install() before importing pyspark"
            raise ConfigError(msg)
        modules: dict[str, types.ModuleType] = {}
        for name, attrs in _layout(vars(facade)).items():
            mod = types.ModuleType(name, f"streamkeep's PySpark facade for {name} (see {GUIDE}).")
            is_pkg = name in ("pyspark", "pyspark.streaming")
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_pkg)
            if is_pkg:
                mod.__path__ = []
            mod.__dict__.update(attrs)
            mod.__dict__[_MARK] = True
            mod.__dict__["__getattr__"] = _module_getattr(name)
            mod.__all__ = sorted(attrs)  # type: ignore[attr-defined]
            modules[name] = mod
        for name, mod in modules.items():
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(modules[parent], child, mod)
        sys.modules.update(modules)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Undo `install()`: forget the facade's ``pyspark`` modules (for tests)."""
    with _lock:
        for name in [n for n, m in sys.modules.items() if (n == "pyspark" or n.startswith("pyspark.")) and getattr(m, _MARK, False)]:
            del sys.modules[name]
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


__all__ = ["install", "uninstall"]

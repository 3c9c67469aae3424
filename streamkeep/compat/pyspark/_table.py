"""The machinery behind the alias table: parameter specs and method generation.

An `Alias` says how one PySpark method maps onto one core call: the core
method (or a small function composing core calls), how each PySpark parameter
is passed (positionally, by a core keyword, or accepted and ignored), how its
value is converted (facade objects to core objects, RDD functions to Batch
functions) and how the result is wrapped back. `build_methods` turns a table
into real methods of a facade class, with PySpark's signatures, so the
camelCase surface exists exactly once: in `_aliases.py`.

A facade class provides ``_core`` (the wrapped core object), ``_convert(kind,
value, op)`` and ``_wrap(kind, value, op)``.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamkeep.errors import DerivedNameWarning

REQUIRED: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class P:
    """One PySpark parameter.

    Attributes:
        name: PySpark's parameter name.
        default: its default (REQUIRED when it has none).
        to: the core keyword it becomes; "" = passed positionally, in table order;
            None = accepted for compatibility and ignored.
        conv: how the facade converts the value first ("" = unchanged).
        varargs: a ``*name`` parameter (each value converted, passed positionally).
    """

    name: str
    default: Any = REQUIRED
    to: str | None = ""
    conv: str = ""
    varargs: bool = False


@dataclass(frozen=True)
class Alias:
    """How one PySpark method maps onto the core.

    Attributes:
        target: name of the core method on the wrapped object, or a function
            ``f(core_object, *args, **kwargs)`` that composes core calls.
        params: PySpark's parameters, in PySpark's order.
        returns: how the facade wraps the result ("stream", "rdd", "value", "none", "self").
        named: the core operator or source is keyed by name in the checkpoint
            (stateful operators, sources); the method also takes a keyword-only
            ``name=`` (a streamkeep extension) and, without it, the core's derived
            name is used without a DerivedNameWarning.
        note: how the method differs from PySpark, if at all (for docs).
    """

    target: str | Callable[..., Any]
    params: tuple[P, ...] = ()
    returns: str = "stream"
    named: bool = False
    note: str = ""

    @property
    def core_call(self) -> str:
        """The core call this alias makes, for docs."""
        t = self.target
        return t if isinstance(t, str) else (t.__doc__ or t.__name__).strip()


def _signature(alias: Alias) -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in alias.params:
        if p.varargs:
            params.append(inspect.Parameter(p.name, inspect.Parameter.VAR_POSITIONAL))
        else:
            params.append(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default))
    if alias.named:
        params.append(inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(params)


def make_method(owner: str, pyname: str, alias: Alias) -> Callable[..., Any]:
    """A facade method for `alias`, with PySpark's name and signature."""
    sig = _signature(alias)
    op = f"{owner}.{pyname}"

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as exc:
            msg = f"{op}{str(sig).replace('(self, ', '(').replace('(self)', '()')}: {exc}"
            raise TypeError(msg) from None
        bound.apply_defaults()
        pos: list[Any] = []
        kw: dict[str, Any] = {}
        for p in alias.params:
            value = bound.arguments[p.name]
            if p.to is None:
                continue
            if p.varargs:
                pos.extend(self._convert(p.conv, v, op) if p.conv else v for v in value)
                continue
            if p.conv:
                value = self._convert(p.conv, value, op)
            if p.to == "":
                pos.append(value)
            else:
                kw[p.to] = value
        target = alias.target
        call = getattr(self._core, target) if isinstance(target, str) else _bind(target, self._core)
        if alias.named:
            name = bound.arguments["name"]
            kw["name"] = name
            if name is None:
                with quiet_derived_names():
                    result = call(*pos, **kw)
                return self._wrap(alias.returns, result, op)
        return self._wrap(alias.returns, call(*pos, **kw), op)

    method.__name__ = pyname
    method.__qualname__ = f"{owner}.{pyname}"
    method.__signature__ = sig  # type: ignore[attr-defined]
    doc = f"PySpark's ``{op}``, mapped onto streamkeep's ``{alias.core_call}``."
    if alias.named:
        doc += " ``name=`` (streamkeep extension) pins its state or position in the checkpoint."
    if alias.note:
        doc += f"\n\n{alias.note}"
    method.__doc__ = doc
    return method


@contextlib.contextmanager
def quiet_derived_names() -> Iterator[None]:
    """Derive names without DerivedNameWarning: PySpark programs never name operators or sources."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DerivedNameWarning)
        yield


def _bind(fn: Callable[..., Any], core: Any) -> Callable[..., Any]:
    return lambda *a, **k: fn(core, *a, **k)


def build_methods(cls: type, table: dict[str, Alias]) -> None:
    """Add a generated method to `cls` for every alias it does not define itself."""
    for pyname, alias in table.items():
        if pyname not in cls.__dict__:
            setattr(cls, pyname, make_method(cls.__name__, pyname, alias))


__all__ = ["REQUIRED", "Alias", "P", "build_methods", "make_method", "quiet_derived_names"]

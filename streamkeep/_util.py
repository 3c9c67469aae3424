"""Small helpers shared by every layer: durations, arity checks, stable hashing.

Imports only `streamkeep.errors` and `streamkeep._types`.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from types import FunctionType, ModuleType
from typing import Any, Final, TypeVar

from streamkeep._types import BatchTime
from streamkeep.errors import ConfigError, UserFunctionError

Duration = float | int | timedelta


#: The argument of the KeyboardInterrupt that ``streamkeep run``'s SIGTERM handler raises, so the
#: job's log can say what stopped it (SIGTERM) and what a second one does.
SIGTERM_INTERRUPT = "SIGTERM"


def info_shown(logger: logging.Logger) -> bool:
    """Will an INFO line of `logger` reach a handler that shows it (not a NullHandler, nor one above INFO or filtering it)?"""
    if not logger.isEnabledFor(logging.INFO):
        return False
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", (), None)
    c: logging.Logger | None = logger
    while c is not None:
        for h in c.handlers:
            if not isinstance(h, logging.NullHandler) and logging.INFO >= h.level and h.filter(record):
                return True
        c = c.parent if c.propagate else None
    return False


def stopped_by_sigterm(exc: BaseException) -> bool:
    """True if `exc` is the KeyboardInterrupt that a SIGTERM was turned into (not a Ctrl-C)."""
    return isinstance(exc, KeyboardInterrupt) and exc.args[:1] == (SIGTERM_INTERRUPT,)


def duration_ms(value: Duration, what: str) -> int:
    """Convert seconds (float) or a timedelta to whole milliseconds, validating it."""
    if isinstance(value, timedelta):
        ms = value / timedelta(milliseconds=1)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{what} must be seconds (a number) or a datetime.timedelta, got {type(value).__name__}"
        raise ConfigError(msg)
    else:
        ms = float(value) * 1000.0
    if not 0 < ms < float("inf"):  # also NaN
        msg = f"{what} must be positive and finite, got {value!r}"
        raise ConfigError(msg)
    rounded = round(ms)
    if abs(rounded - ms) > 1e-6 or rounded == 0:
        msg = f"{what} must be a whole number of milliseconds, got {value!r}"
        raise ConfigError(msg)
    return int(rounded)


def to_datetime(batch_time: BatchTime) -> datetime:
    """The aware UTC datetime of a batch time in ms."""
    return datetime.fromtimestamp(batch_time / 1000.0, tz=timezone.utc)


def check_callable(fn: object, operator: str, arg: str = "function") -> None:
    """Raise ConfigError unless `fn` is callable."""
    if not callable(fn):
        msg = f"{operator}: {arg} must be callable, got {type(fn).__name__} ({fn!r:.60})"
        raise ConfigError(msg)


def positional_arity(fn: Callable[..., Any]) -> tuple[int, int | None] | None:
    """(min, max) positional arguments `fn` accepts; max None = *args; None if unknown."""
    if type(fn) is FunctionType and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__"):
        return _function_arity(fn)  # what inspect.signature says, read off the code object (no inspect import)
    import inspect  # imported on first use: importing it (ast, dis, tokenize) costs ~10 ms at start-up

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    lo = 0
    hi: int | None = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                lo += 1
            if hi is not None:
                hi += 1
        elif p.kind is p.VAR_POSITIONAL:
            hi = None
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
    return lo, hi


def _function_arity(fn: FunctionType) -> tuple[int, int | None] | None:
    """`positional_arity` of a plain Python function (not wrapped, no ``__signature__``)."""
    code = fn.__code__
    n = code.co_argcount  # positional-only and positional-or-keyword parameters
    required_kw = code.co_varnames[n : n + code.co_kwonlyargcount]
    if any(name not in (fn.__kwdefaults__ or {}) for name in required_kw):
        return None
    return n - len(fn.__defaults__ or ()), None if code.co_flags & _CO_VARARGS else n


#: The code flag of a function that takes ``*args`` (`inspect.CO_VARARGS`).
_CO_VARARGS: Final = 0x04


def accepts(fn: Callable[..., Any], n: int) -> bool | None:
    """True/False if `fn` can be called with `n` positional args; None if unknown."""
    ar = positional_arity(fn)
    if ar is None:
        return None
    lo, hi = ar
    return lo <= n and (hi is None or n <= hi)


def check_arity(fn: Callable[..., Any], n: int, operator: str, signature: str) -> None:
    """Raise ConfigError when `fn` certainly cannot take `n` positional arguments."""
    check_callable(fn, operator)
    if accepts(fn, n) is False:
        name = getattr(fn, "__qualname__", repr(fn))
        msg = f"{operator}: the function must look like {signature} ({n} arguments), but {name} takes {_describe_arity(fn)}"
        raise ConfigError(msg)


def _describe_arity(fn: Callable[..., Any]) -> str:
    ar = positional_arity(fn)
    if ar is None:
        return "an unknown number of arguments"
    lo, hi = ar
    if hi is None:
        return f"at least {lo} arguments"
    if lo == hi:
        return f"{lo} argument{'s' if lo != 1 else ''}"
    return f"{lo} to {hi} arguments"


def stable_hash(key: Hashable) -> int:
    """A hash of `key` that is the same in every process (unlike str's `hash`).

    Used to assign keys to partitions, which must agree across processes and runs.
    """
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, bool) or isinstance(key, int):
        return hash(key) & 0xFFFFFFFF
    if isinstance(key, bytes):
        return zlib.crc32(key)
    if isinstance(key, tuple):
        h = 0x345678
        for item in key:
            h = (h * 1000003) ^ stable_hash(item)
            h &= 0xFFFFFFFF
        return h
    if key is None:
        return 0
    if isinstance(key, float):
        return hash(key) & 0xFFFFFFFF
    if isinstance(key, frozenset):  # its repr's order follows the salted string hash: combine order-free
        acc = 0
        for item in key:
            acc = (acc + zlib.crc32(stable_hash(item).to_bytes(4, "little"))) & 0xFFFFFFFF
        return acc ^ 0x7F4A7C15
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass"))


def check_partitions(n: Any, what: str, *, optional: bool = False) -> None:
    """ConfigError unless `n` is a positive int (or None, with `optional`); `what` names the call."""
    if optional and n is None:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        msg = f"{what}: num_partitions must be a positive int{' or None' if optional else ''}, got {n!r}"
        raise ConfigError(msg)


def user_function_error(
    where: str, exc: BaseException, batch_time: int, operator: str, *, detail: str = "", at: str = "", subject: str | None = None
) -> UserFunctionError:
    """The `UserFunctionError` for a user function that raised `exc` (chain it: ``raise ... from exc``).

    Message: "user function <where> raised <Type>: <message><detail> (batch time <T> ms<at>)",
    e.g. where="in operator 'map'", detail=" for record 3", at=", partition 0". A `subject`
    names the function otherwise (it replaces "user function <where>"), e.g.
    subject="RedisSink 'out': the write function".
    """
    who = subject if subject is not None else f"user function {where}"
    msg = f"{who} raised {type(exc).__name__}: {short_repr(str(exc), 200)}{detail} (batch time {batch_time} ms{at})"
    return UserFunctionError(msg, operator=operator, batch_time_ms=batch_time)


def short_repr(value: object, limit: int = 80) -> str:
    """repr() cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_optional(module: str, who: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise ConfigError naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{who} needs the {module!r} package, which is not installed: pip install 'streamkeep[{extra}]'"
        raise ConfigError(msg) from exc


def atomic_write_file(path: str, data: bytes) -> None:
    """Replace the local file `path` with `data` atomically and durably.

    Writes a temp file in the same directory, fsyncs it, renames it over `path`
    and fsyncs the directory: readers see the old or the new content, never a mix,
    and a rewrite with the same data (a replayed batch) leaves the same file.
    Raises OSError; the temp file is removed on failure.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{random_id()[:12]}.tmp")
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """fsync `directory` itself, so a rename or unlink in it survives a power loss (POSIX).

    Raises OSError.
    """
    fsync_path(directory)


def fsync_path(path: str) -> None:
    """fsync the file or directory at `path` (its data and metadata reach the disk). Raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _GcPause:
    """Whether a `gc_paused` block turned the collector off, and how many `gc_resumed` waits run now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.paused = False  # a gc_paused block turned the collector off (and has not ended)
        self.waits = 0  # gc_resumed blocks running


_GC = _GcPause()  # the collector's switch is process-wide, so is what we know of who turned it


@contextmanager
def gc_paused(when: bool = True) -> Iterator[None]:
    """Pause the cyclic GC inside the block (if `when` and it is running); restore it after.

    For code that builds many objects that all live past the block (a batch's records, a
    decoded state): collections meanwhile free nothing and only walk the heap. The toggle is
    process-wide; it is only restored by the call that turned it off, so nested or concurrent
    use at worst leaves the GC running. Cyclic garbage made inside waits until the block ends,
    or until code inside waits on something outside the process (`gc_resumed`).
    """
    mine = False
    if when and gc.isenabled():
        with _GC.lock:
            if gc.isenabled() and not _GC.waits:  # (while a wait runs, the collector stays on)
                gc.disable()
                _GC.paused = mine = True
    try:
        yield
    finally:
        if mine:
            with _GC.lock:
                _GC.paused = False
                gc.enable()


@contextmanager
def gc_resumed() -> Iterator[None]:
    """Run the cyclic GC inside the block if a `gc_paused` block turned it off; pause it again after.

    For waits that may last: a connector's retries and backoff while a server is down, a
    full write queue. A batch that stalls there would otherwise leave the whole process
    (its other threads too) without a collector for as long as the stall lasts. A collector
    the application turned off stays off.
    """
    with _GC.lock:
        _GC.waits += 1
        if _GC.paused:
            gc.enable()
    try:
        yield
    finally:
        with _GC.lock:
            _GC.waits -= 1
            if _GC.paused and not _GC.waits:
                gc.disable()


_R = TypeVar("_R")


def retry_with_backoff(
    fn: Callable[[], _R],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    first_s: float,
    give_up: Callable[[BaseException, int, float], BaseException | None],
    on_retry: Callable[[BaseException, int, float], None] = lambda exc, attempt, delay_s: None,
    between: Callable[[], None] | None = None,
    cap_s: float = 2.0,
    sleep: Callable[[float], object] = time.sleep,
) -> _R:
    """Call `fn` until it returns, retrying the exceptions `retry_on` after an exponential backoff.

    The one retry loop of the connectors (connectors own their retries: bounded, configurable,
    logged). After a failed attempt ``give_up(exc, attempt, delay_s)`` decides: None retries
    after ``delay_s``; an exception is raised (chained to `exc`; `exc` itself re-raises it
    as is). ``on_retry`` (e.g. a log line) runs before the wait, ``between`` (e.g. a metadata
    refresh) after it. The delay starts at `first_s` and doubles up to `cap_s`.

    Example:
        >>> calls = []
        >>> def flaky() -> str:
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionError("down")
        ...     return "up"
        >>> retry_with_backoff(flaky, retry_on=ConnectionError, first_s=0.001, give_up=lambda e, n, d: None)
        'up'
    """
    delay_s = first_s
    attempt = 0
    with ExitStack() as stall:
        while True:
            attempt += 1
            try:
                return fn()
            except retry_on as exc:
                err = give_up(exc, attempt, delay_s)
                if err is exc:
                    raise
                if err is not None:
                    raise err from exc
                if attempt == 1:  # a stall (a server down): the collector runs while it lasts
                    stall.enter_context(gc_resumed())
                on_retry(exc, attempt, delay_s)
                sleep(delay_s)
                delay_s = min(delay_s * 2, cap_s)
                if between is not None:
                    between()


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` that import `names` ({name: module}) on first use.

    Keeps ``import streamkeep`` from importing every source, sink and executor (and their
    libraries' wrappers) that a job may never use; ``from package import Name`` works as
    before. The package names them under ``TYPE_CHECKING`` too, so type checkers see them.
    """
    module = sys.modules[package]

    def getattr_(name: str) -> Any:
        where = names.get(name)
        if where is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        value = getattr(importlib.import_module(where), name)
        setattr(module, name, value)  # later look-ups find it without this hook
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return getattr_, dir_


def promote_to_oldest_generation() -> None:
    """Move every object the cyclic GC tracks now into its oldest generation, without a collection.

    After a restart decodes a big state (lists or a dict of a million entries), the next
    young-generation collection would walk every entry (tens of ms on the first batch,
    again at the middle generation's): once promoted, only full collections (rare, and
    needed anyway) walk them. Cyclic garbage made before the call is collected later, by a
    full collection. Does nothing when objects are frozen already (`gc.freeze` by the
    application, e.g. before forking), so that they stay frozen.
    """
    import gc

    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()  # the frozen objects go to the oldest generation


def random_id() -> str:
    """128 random bits as 32 hex digits: temp file names, probe tokens, a checkpoint's id (`uuid.uuid4().hex`
    without importing uuid, which imports platform: ~5 ms of every start-up)."""
    return os.urandom(16).hex()


def hostname() -> str:
    """This host's name, as `socket.gethostname` gives it (without importing socket where `os.uname` exists)."""
    if hasattr(os, "uname"):
        return os.uname().nodename  # what gethostname(2) returns on POSIX systems
    import socket  # pragma: no cover - Windows

    return socket.gethostname()  # pragma: no cover

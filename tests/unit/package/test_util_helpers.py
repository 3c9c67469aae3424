"""One helper per repeated meaning (issue 11.7): partition counts and user-function errors."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest

import streamkeep as sk
from streamkeep._util import check_partitions, hostname, positional_arity, random_id, user_function_error
from streamkeep.errors import ConfigError, UserFunctionError
from streamkeep.testing import ManualClock


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_partition_counts_are_positive_ints(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^op: num_partitions must be a positive int, got "):
        check_partitions(bad, "op")
    with pytest.raises(ConfigError, match=r"^op: num_partitions must be a positive int or None, got "):
        check_partitions(bad, "op", optional=True)


def test_none_is_a_partition_count_only_where_optional() -> None:
    check_partitions(None, "op", optional=True)
    with pytest.raises(ConfigError, match="got None"):
        check_partitions(None, "op")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[("a", 1)]], name="q")
    s.reduce_by_key(lambda a, b: a + b, num_partitions=None)  # the engine picks
    with pytest.raises(ConfigError, match="^repartition: num_partitions must be a positive int, got None$"):
        s.repartition(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^rate_stream: num_partitions must be a positive int, got None$"):
        ssc.rate_stream(1, name="r", num_partitions=None)  # type: ignore[arg-type]


def test_a_user_function_error_names_where_what_and_when() -> None:
    err = user_function_error("in operator 'map'", ValueError("boom"), 3000, "map", detail=" for record 7", at=", partition 1")
    assert isinstance(err, UserFunctionError) and err.operator == "map" and err.batch_time_ms == 3000
    assert str(err) == "user function in operator 'map' raised ValueError: 'boom' for record 7 (batch time 3000 ms, partition 1)"


def test_pickle_is_refused_the_same_way_for_files_and_inline_deltas() -> None:
    from streamkeep.codec import get_codec
    from streamkeep.codec._registry import refuse_pickle
    from streamkeep.errors import CheckpointError
    from streamkeep.scheduler._state_io import decode_state

    refuse_pickle("pickle", True, "x")
    refuse_pickle("msgpack", False, "x")
    payload = get_codec("pickle").encode({"set": [], "del": []})
    with pytest.raises(CheckpointError, match=r"^inline delta of batch 5 was written with the pickle codec, and loading it would execute code .*codec='pickle'"):
        decode_state("pickle", payload, False, "inline delta of batch 5")


def test_retry_with_backoff_doubles_up_to_the_cap_and_gives_up_as_told() -> None:
    from streamkeep._util import retry_with_backoff

    waits: list[float] = []
    between: list[int] = []
    logged: list[tuple[int, float]] = []
    attempts = iter(range(100))

    def flaky() -> str:
        if next(attempts) < 4:
            raise ConnectionError("down")
        return "up"

    got = retry_with_backoff(
        flaky,
        retry_on=ConnectionError,
        first_s=0.1,
        cap_s=0.3,
        give_up=lambda exc, n, d: None,
        on_retry=lambda exc, n, d: logged.append((n, d)),
        between=lambda: between.append(len(waits)),
        sleep=waits.append,
    )
    assert got == "up" and waits == [0.1, 0.2, 0.3, 0.3] and logged == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)]
    assert between == [1, 2, 3, 4]  # after each wait

    def down() -> None:
        raise ConnectionError("still down")

    def give_up(exc: BaseException, n: int, d: float) -> BaseException | None:
        return RuntimeError(f"gave up after {n}") if n >= 3 else None

    with pytest.raises(RuntimeError, match="gave up after 3") as info:
        retry_with_backoff(down, retry_on=ConnectionError, first_s=0.1, give_up=give_up, sleep=lambda s: None)
    assert isinstance(info.value.__cause__, ConnectionError)
    original = ConnectionError("as is")

    def fail() -> None:
        raise original

    with pytest.raises(ConnectionError) as same:
        retry_with_backoff(fail, retry_on=ConnectionError, first_s=0.1, give_up=lambda exc, n, d: exc, sleep=lambda s: None)
    assert same.value is original and same.value.__cause__ is None
    with pytest.raises(ValueError):  # not retried
        retry_with_backoff(lambda: int("x"), retry_on=ConnectionError, first_s=0.1, give_up=lambda exc, n, d: None)


def test_connector_errors_of_user_functions_use_the_one_message_shape() -> None:
    err = user_function_error("", ValueError("bad"), 3000, "RedisSink out", detail="; nothing was applied", subject="RedisSink 'out': the write function")
    assert str(err) == "RedisSink 'out': the write function raised ValueError: 'bad'; nothing was applied (batch time 3000 ms)"
    assert err.operator == "RedisSink out" and err.batch_time_ms == 3000


def test_stateful_runtimes_get_their_stores_from_a_factory() -> None:
    from streamkeep.executors._event_time import EventWindowRuntime
    from streamkeep.executors._runtime import ReduceWindowRuntime, UpdateStateRuntime
    from streamkeep.state.factory import memory_store

    made: list[object] = []

    def factory():  # type: ignore[no-untyped-def]
        made.append(memory_store())
        return made[-1]

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[("a", 1)]], name="q")
    s.update_state_by_key(lambda new, old: sum(new) + (old or 0), name="u")
    s.reduce_by_key_and_window(lambda a, b: a + b, 2, 1, inv_f=lambda a, b: a - b, name="w")
    s.with_event_time(lambda kv: 0, max_delay=1).tumbling_window(1).count_by_key(name="e")
    g = ssc._graph
    assert UpdateStateRuntime(g.names["u"], stores=factory).store is made[-1]
    assert ReduceWindowRuntime(g.names["w"], 0, stores=factory).running is made[-1]
    assert EventWindowRuntime(g.names["e"], stores=factory).store is made[-1]
    assert len(made) == 3


def _inspect_arity(fn: Any) -> tuple[int, int | None] | None:
    """What `positional_arity` said before its fast path for plain functions (through inspect.signature)."""
    sig = inspect.signature(fn)
    lo, hi = 0, 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            lo += p.default is p.empty
            hi = None if hi is None else hi + 1
        elif p.kind is p.VAR_POSITIONAL:
            hi = None
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
    return lo, hi


def _wrapped(x: int, y: int) -> int:
    return x + y


@functools.wraps(_wrapped)
def _wrapper(*args: Any, **kwargs: Any) -> int:
    return _wrapped(*args, **kwargs)


def _with_signature(*args: Any) -> None: ...


_with_signature.__signature__ = inspect.signature(lambda a, b=1: None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "fn",
    [
        lambda: None,
        lambda x: x,
        lambda x, y=1: x,
        lambda x, /, y, z=2: x,
        lambda *a: a,
        lambda x, *a, **k: x,
        lambda x, *, k: x,
        lambda x, *, k=1: x,
        lambda x=1, *, k=1, **kw: x,
        lambda x, y, /: x,
        _wrapper,
        _with_signature,
        functools.partial(lambda x, y: x, 1),
    ],
)
def test_arity_of_plain_functions_is_what_inspect_says(fn: Any) -> None:
    assert positional_arity(fn) == _inspect_arity(fn)


def test_arity_follows_defaults_changed_after_definition() -> None:
    def f(a: int, b: int) -> int:
        return a + b

    f.__defaults__ = (2,)
    assert positional_arity(f) == _inspect_arity(f) == (1, 2)


def test_random_ids_and_the_host_name_match_what_uuid_and_socket_give() -> None:
    import socket
    import uuid

    ids = {random_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(len(uuid.UUID(i).hex) == 32 for i in ids)  # usable where a uuid4().hex was
    assert hostname() == socket.gethostname()

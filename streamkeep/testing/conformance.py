"""Conformance checks for your own `Source` or `Sink`: what the engine relies on, checked directly.

Every built-in source and sink passes them (tests/unit/sources, tests/unit/sinks and the
integration tests run them against the real servers). Run them on your own::

    from streamkeep.testing.conformance import check_sink, check_source

    def test_my_source_conforms(tmp_path):
        check_source(lambda: MySource(..., name="mine"), feed=lambda i: add_input(i))

    def test_my_sink_conforms(tmp_path):
        check_sink(lambda: MySink(tmp_path, name="out"), read_back=lambda: read_everything(tmp_path))

`check_source` drives the source as the scheduler does with a checkpoint: plan as
plain data, read exactly the plan, read it again (a replay gives the same records),
then a second instance (a restarted driver) restores a committed position, re-reads
the pending plans and continues where the first one would. `check_sink` writes
batches, replays one, restarts the sink and replays again (nothing may change), and
checks the optional capabilities the sink declares (`BatchSink`, `MarkedSink`,
`FencedSink`: a driver with an older fencing token is refused).

A failed check raises AssertionError saying which rule and what was seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn

from streamkeep.batch import Batch
from streamkeep.codec import get_codec
from streamkeep.errors import CheckpointInUseError
from streamkeep.sinks.base import BatchSink, FencedSink, FencingToken, MarkedSink, Sink
from streamkeep.sources.base import BatchIntervalAware, Materialisable, Source

__all__ = ["DurableBlobs", "check_sink", "check_source"]

_PLAIN = get_codec("msgpack")


class DurableBlobs:
    """A `BlobStore` that keeps blobs as a checkpoint does: encoded (plain data only) and durable."""

    durable = True

    def __init__(self) -> None:
        self._d: dict[str, bytes] = {}

    def put(self, name: str, data: Any) -> None:
        """Store `data` (must be plain data the checkpoint codec can encode)."""
        self._d[name] = _encoded(data, f"blob {name!r}")

    def get(self, name: str) -> Any:
        """The data stored under `name`."""
        return _PLAIN.decode(self._d[name])

    def delete(self, name: str) -> None:
        """Forget `name`."""
        self._d.pop(name, None)


def _fail(rule: str, detail: str) -> NoReturn:
    """Raise the AssertionError of a broken rule (the message starts with the rule's name)."""
    msg = f"{rule}: {detail}"
    raise AssertionError(msg)


def _encoded(value: Any, what: str) -> bytes:
    try:
        return _PLAIN.encode(value)
    except Exception as exc:
        msg = f"plain data: {what} must be plain data the checkpoint can store (msgpack: dicts, lists, str, int, ...), got {value!r:.200} ({exc})"
        raise AssertionError(msg) from exc


def _plain(value: Any, what: str) -> Any:
    """`value` as the checkpoint stores and gives it back."""
    return _PLAIN.decode(_encoded(value, what))


def _partitions(records: Any, who: str, t: int) -> list[list[Any]]:
    if not isinstance(records, list) or not all(isinstance(p, list) for p in records):
        msg = f"{who}.read(plan, {t}) must return a list of partitions (lists of records), got {type(records).__name__}: {records!r:.200}"
        _fail("read", msg)
    return records


def check_source(
    factory: Callable[[], Source],
    *,
    batches: int = 4,
    interval_ms: int = 1000,
    feed: Callable[[int], None] | None = None,
    same_plans_after_restore: bool = True,
    min_records: int = 1,
) -> list[list[list[Any]]]:
    """Check that the sources `factory` makes behave as the scheduler and recovery need.

    Args:
        factory: makes a new, unopened source (same arguments each time: a restarted driver).
        batches: how many batches to plan (batch times ``interval_ms, 2 * interval_ms, ...``).
        interval_ms: the batch interval handed to a `BatchIntervalAware` source.
        feed: ``feed(i)`` is called before batch ``i`` (from 0) is planned, to add input
            (write a file, produce to a topic, send a line); None for a source with its own input.
        same_plans_after_restore: the restarted instance must plan what the first one plans
            next (True for sources whose input does not depend on when it is read; False for
            live input such as a socket).
        min_records: the batches must hold at least this many records in all.

    Returns:
        The records of each batch, one list per partition (for further checks of your own).

    Raises:
        AssertionError: a rule is broken; the message names it.
    """
    blobs = DurableBlobs()
    first = factory()
    who = type(first).__name__
    if not isinstance(first, Source):
        _fail("protocol", f"{who} does not implement streamkeep.sources.base.Source")
    if not isinstance(first.name, str) or not first.name:
        _fail("name", f"{who}.name must be a non-empty str, got {first.name!r}")
    replayable = first.replayable
    if not isinstance(replayable, bool):
        _fail("replayable", f"{who}.replayable must be a bool, got {replayable!r}")
    materialises = isinstance(first, Materialisable) and bool(first.can_materialise)
    if not replayable and not materialises:
        msg = f"{who} is neither replayable nor materialises its input into blobs: it cannot run with a checkpoint"
        _fail("replay", msg)
    desc = _plain(first.describe(), f"{who}.describe()")
    if not isinstance(desc, dict) or not isinstance(desc.get("kind"), str):
        _fail("describe", f"{who}.describe() must be a dict with a str 'kind', got {desc!r}")

    def opened(src: Source) -> Source:
        if isinstance(src, BatchIntervalAware):
            src.set_batch_interval_ms(interval_ms)
        src.open(blobs)
        return src

    restarted: Source | None = None
    try:
        opened(first)
        positions = [_plain(first.position(), f"{who}.position()")]
        plans: list[Any] = []
        read: list[list[list[Any]]] = []
        for i in range(batches):
            t = (i + 1) * interval_ms
            if feed is not None:
                feed(i)
            plan = _plain(first.plan(t), f"{who}.plan({t})")
            plans.append(plan)
            positions.append(_plain(first.position(), f"{who}.position() after plan({t})"))
            records = _partitions(first.read(plan, t), who, t)
            read.append(records)
            again = _partitions(first.read(plan, t), who, t)
            if again != records:
                _fail("replay", f"{who}.read(plan, {t}) gave other records the second time: {records!r:.200} then {again!r:.200}")
            if not isinstance(first.exhausted(), bool):
                _fail("exhausted", f"{who}.exhausted() must return a bool")
        total = sum(len(p) for b in read for p in b)
        if total < min_records:
            _fail("input", f"{who} read {total} records in {batches} batches, expected at least {min_records} (does feed= add input?)")

        # A restarted driver: restores the last commit's position, re-reads the pending plans, continues.
        restarted = opened(factory())
        committed = batches // 2
        restarted.restore(positions[committed])
        for i in range(committed, batches):
            t = (i + 1) * interval_ms
            got = _partitions(restarted.read(plans[i], t), who, t)
            if got != read[i]:
                msg = (
                    f"a new {who} restored at the position of batch {committed * interval_ms} ms read the pending plan of "
                    f"batch {t} ms as {got!r:.200}, the first instance read {read[i]!r:.200}"
                )
                _fail("recovery", msg)
        restarted.restore(positions[-1])
        if same_plans_after_restore:
            t = (batches + 1) * interval_ms
            if feed is not None:
                feed(batches)
            expected = _plain(first.plan(t), f"{who}.plan({t})")
            want = first.read(expected, t)  # before the new instance plans the same batch time (blob names may repeat)
            got_plan = _plain(restarted.plan(t), f"{who}.plan({t})")
            got = restarted.read(got_plan, t)
            if got_plan != expected or got != want:
                msg = (
                    f"after restore(position()) a new {who} planned {got_plan!r:.200} for batch {t} ms and read "
                    f"{got!r:.200}; the first instance planned {expected!r:.200} and read {want!r:.200}"
                )
                _fail("continue", msg)
    finally:
        for src in (first, restarted):
            if src is not None:
                src.close()
                src.close()  # safe to call twice
    return read


def _records(t: int) -> list[Any]:
    return [f"record-{t}-{i}" for i in range(3)]


def _write(sink: Sink, t: int, records: list[Any]) -> None:
    """Write as the executor does: a `BatchSink` reads the batch itself."""
    if isinstance(sink, BatchSink):
        sink.write_batch(t, Batch([list(records)], t))
    else:
        sink.write(t, list(records))


def check_sink(
    factory: Callable[[], Sink],
    read_back: Callable[[], list[Any]],
    *,
    records: Callable[[int], list[Any]] = _records,
    ordered: bool = False,
    checkpoint_id: str = "conformance",
) -> None:
    """Check that the sinks `factory` makes apply every batch time once, through replays and restarts.

    Args:
        factory: makes a new, unopened sink writing to the same place each time (a restarted driver).
        read_back: every record the external system holds now, as `records` made them
            (e.g. the lines of the files, the values of the topic, the list in Redis).
        records: the records of batch time T (default: three strings naming T).
        ordered: compare what `read_back` returns in order (default: as a multiset).
        checkpoint_id: the checkpoint id of the fencing tokens handed to a `FencedSink`.

    Raises:
        AssertionError: a rule is broken; the message names it.
    """
    sinks: list[Sink] = []
    expected: list[Any] = []

    def same(got: list[Any], want: list[Any]) -> bool:
        if ordered:
            return got == want
        return Counter(map(repr, got)) == Counter(map(repr, want))

    def check(rule: str, after: str) -> None:
        got = list(read_back())
        if not same(got, expected):
            _fail(rule, f"after {after}, the sink holds {got!r:.300}; expected {expected!r:.300}")

    def make(epoch: int, *, open_: bool = True) -> Sink:
        sink = factory()
        sinks.append(sink)
        who = type(sink).__name__
        if not isinstance(sink, Sink):
            _fail("protocol", f"{who} does not implement streamkeep.sinks.base.Sink")
        if not isinstance(sink.name, str) or not sink.name:
            _fail("name", f"{who}.name must be a non-empty str, got {sink.name!r}")
        if isinstance(sink, FencedSink):
            sink.set_fencing_token(FencingToken(checkpoint_id, epoch))  # before open(), as the scheduler does
        if open_:
            sink.open()
        return sink

    try:
        a = make(1)
        who = type(a).__name__
        for t in (1000, 2000):
            _write(a, t, records(t))
            expected.extend(records(t))
        check("write", "writing batches 1000 and 2000 ms")
        _write(a, 3000, [])
        check("empty batch", "writing the empty batch 3000 ms")
        _write(a, 2000, records(2000))
        check("replay", "writing batch 2000 ms again (a replay)")
        if isinstance(a, MarkedSink):
            last = a.last_batch()
            if last not in (2000, 3000):
                _fail("marker", f"{who}.last_batch() is {last!r} after batches up to 3000 ms were applied")
        a.close()
        a.close()  # safe to call twice

        b = make(2)  # a restarted (newer) driver
        _write(b, 2000, records(2000))
        check("replay after restart", "a new sink wrote batch 2000 ms again")
        if isinstance(b, MarkedSink) and b.last_batch() not in (2000, 3000):
            _fail("marker", f"a new {who}.last_batch() is {b.last_batch()!r}; batches up to 3000 ms were applied")
        _write(b, 4000, records(4000))
        expected.extend(records(4000))
        check("write after restart", "a new sink wrote batch 4000 ms")

        if isinstance(b, FencedSink):
            zombie = make(1, open_=False)  # a driver fenced out by b's newer epoch
            try:
                zombie.open()  # may refuse already, or at the write
                _write(zombie, 5000, records(5000))
            except CheckpointInUseError:
                pass
            else:
                _fail("fencing", f"{who} with fencing epoch 1 wrote batch 5000 ms after a sink with epoch 2 wrote")
            check("fencing", "a fenced-out sink tried to write batch 5000 ms")
    finally:
        for s in sinks:
            s.close()

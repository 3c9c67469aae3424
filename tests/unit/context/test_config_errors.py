"""Graph-build-time validation: each mistake is a ConfigError that says what to change.

Nothing here runs a batch unless the test says so: the errors must come while the
graph is built (STYLE.md section 5), not in batch 1.
"""

from __future__ import annotations

import operator
from datetime import timedelta

import pytest

import streamkeep as sk
from streamkeep import Batch, ConfigError
from streamkeep.errors import DerivedNameWarning
from streamkeep.testing import ListSink, ManualClock

add = operator.add


@pytest.fixture
def ssc():
    ctx = sk.StreamingContext(1.0, clock=ManualClock())
    yield ctx
    ctx.stop()


@pytest.fixture
def s(ssc):
    return ssc.queue_stream([[("a", 1)]], name="q")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, sk.StreamkeepError)


# -- window and slide durations ------------------------------------------------------

WINDOW_OPS = {
    "window": lambda s, length, slide: s.window(length, slide, name="w"),
    "reduce_by_window": lambda s, length, slide: s.reduce_by_window(add, length, slide, name="w"),
    "count_by_window": lambda s, length, slide: s.count_by_window(length, slide, name="w"),
    "count_by_value_and_window": lambda s, length, slide: s.count_by_value_and_window(length, slide, name="w"),
    "reduce_by_key_and_window": lambda s, length, slide: s.reduce_by_key_and_window(add, length, slide, name="w"),
    "reduce_by_key_and_window(inv)": lambda s, length, slide: s.reduce_by_key_and_window(add, length, slide, inv_f=operator.sub, name="w"),
    "group_by_key_and_window": lambda s, length, slide: s.group_by_key_and_window(length, slide, name="w"),
}


@pytest.mark.parametrize("op", sorted(WINDOW_OPS))
def test_window_length_not_a_multiple_of_the_batch_interval(s, op):
    with pytest.raises(ConfigError) as info:
        WINDOW_OPS[op](s, 2.5, None)
    msg = str(info.value)
    assert "window length" in msg
    assert "2500 ms" in msg and "1000 ms" in msg
    assert "multiple" in msg


@pytest.mark.parametrize("op", sorted(WINDOW_OPS))
def test_slide_not_a_multiple_of_the_batch_interval(s, op):
    with pytest.raises(ConfigError) as info:
        WINDOW_OPS[op](s, 4, 1.5)
    msg = str(info.value)
    assert "slide" in msg and "1500 ms" in msg and "multiple" in msg


@pytest.mark.parametrize(("length", "slide"), [(0, None), (-2, None), (2, 0), (2, -1), ("2", None), (None, None), (2, "1")])
def test_window_durations_must_be_positive_numbers(s, length, slide):
    with pytest.raises(ConfigError, match="window|slide"):
        s.window(length, slide, name="w")


def test_window_on_a_windowed_stream_checks_the_parent_slide(s):
    w = s.window(4, 2, name="w1")
    with pytest.raises(ConfigError, match=r"3000 ms.*multiple.*2000 ms"):
        w.window(3, name="w2")
    with pytest.raises(ConfigError, match=r"slide \(3000 ms\)"):
        w.window(6, 3, name="w3")
    w.window(6, 4, name="w4")  # multiples of 2 s are fine


def test_timedelta_durations(s):
    s.window(timedelta(seconds=3), timedelta(seconds=1), name="w")
    with pytest.raises(ConfigError, match="multiple"):
        s.window(timedelta(milliseconds=1500), name="w2")


def test_batch_interval_validation():
    for bad in (0, -1, "1", None, timedelta(0), 0.0001):
        with pytest.raises(ConfigError, match="batch_interval"):
            sk.StreamingContext(bad)
    assert sk.StreamingContext(timedelta(milliseconds=250)).batch_interval_ms == 250
    assert sk.StreamingContext(0.5).batch_interval_ms == 500


def test_sub_second_interval_windows():
    ctx = sk.StreamingContext(0.25)
    s = ctx.queue_stream([], name="q")
    s.window(0.75, 0.5, name="w")
    with pytest.raises(ConfigError, match="multiple"):
        s.window(0.6, name="w2")


# -- functions -------------------------------------------------------------------------

NON_CALLABLE_OPS = {
    "map": lambda s, f: s.map(f),
    "flat_map": lambda s, f: s.flat_map(f),
    "filter": lambda s, f: s.filter(f),
    "map_partitions": lambda s, f: s.map_partitions(f),
    "map_values": lambda s, f: s.map_values(f),
    "flat_map_values": lambda s, f: s.flat_map_values(f),
    "reduce": lambda s, f: s.reduce(f),
    "reduce_by_key": lambda s, f: s.reduce_by_key(f),
    "combine_by_key": lambda s, f: s.combine_by_key(f, add, add),
    "transform": lambda s, f: s.transform(f),
    "transform_with": lambda s, f: s.transform_with(f, s),
    "reduce_by_window": lambda s, f: s.reduce_by_window(f, 2, name="w"),
    "reduce_by_key_and_window": lambda s, f: s.reduce_by_key_and_window(f, 2, name="w"),
    "update_state_by_key": lambda s, f: s.update_state_by_key(f, name="u"),
    "map_with_state": lambda s, f: s.map_with_state(f, name="m"),
    "foreach_batch": lambda s, f: s.foreach_batch(f),
}


@pytest.mark.parametrize("op", sorted(NON_CALLABLE_OPS))
@pytest.mark.parametrize("bad", [None, 3, "len"])
def test_non_callable_functions(s, op, bad):
    with pytest.raises(ConfigError) as info:
        NON_CALLABLE_OPS[op](s, bad)
    assert str(info.value).startswith(op)
    assert "callable" in str(info.value)


@pytest.mark.parametrize(
    ("op", "call"),
    [
        ("reduce_by_key_and_window", lambda s: s.reduce_by_key_and_window(add, 2, inv_f=5, name="w")),
        ("reduce_by_key_and_window", lambda s: s.reduce_by_key_and_window(add, 2, filter_f="x", name="w")),
        ("combine_by_key", lambda s: s.combine_by_key(lambda v: v, None, add)),
        ("combine_by_key", lambda s: s.combine_by_key(lambda v: v, add, 0)),
    ],
)
def test_non_callable_secondary_functions(s, op, call):
    with pytest.raises(ConfigError, match=f"^{op}: .*callable"):
        call(s)


WRONG_ARITY = [
    ("map", lambda s: s.map(lambda a, b: a), "f(record)"),
    ("map", lambda s: s.map(lambda: 1), "f(record)"),
    ("filter", lambda s: s.filter(lambda a, b: a), "f(record)"),
    ("flat_map", lambda s: s.flat_map(lambda: []), "f(record)"),
    ("map_partitions", lambda s: s.map_partitions(lambda a, b: a), "f(iterator)"),
    ("map_values", lambda s: s.map_values(lambda k, v: v), "f(value)"),
    ("flat_map_values", lambda s: s.flat_map_values(lambda k, v: v), "f(value)"),
    ("reduce", lambda s: s.reduce(lambda a: a), "f(a, b)"),
    ("reduce_by_key", lambda s: s.reduce_by_key(lambda a: a), "f(a, b)"),
    ("reduce_by_key", lambda s: s.reduce_by_key(lambda a, b, c: a), "f(a, b)"),
    ("combine_by_key", lambda s: s.combine_by_key(lambda a, b: a, add, add), "create(value)"),
    ("combine_by_key", lambda s: s.combine_by_key(lambda v: v, lambda c: c, add), "merge_value(combiner, value)"),
    ("combine_by_key", lambda s: s.combine_by_key(lambda v: v, add, lambda a: a), "merge_combiners(a, b)"),
    ("update_state_by_key", lambda s: s.update_state_by_key(lambda values: values, name="u"), "update(new_values, old_state)"),
    ("update_state_by_key", lambda s: s.update_state_by_key(lambda k, vs, old: old, name="u"), "update(new_values, old_state)"),
    ("map_with_state", lambda s: s.map_with_state(lambda k, v: v, name="m"), "f(key, value, state)"),
    ("reduce_by_key_and_window", lambda s: s.reduce_by_key_and_window(lambda a: a, 2, name="w"), "f(a, b)"),
    ("reduce_by_key_and_window", lambda s: s.reduce_by_key_and_window(add, 2, inv_f=lambda a: a, name="w"), "inv_f(a, b)"),
    ("reduce_by_key_and_window", lambda s: s.reduce_by_key_and_window(add, 2, filter_f=lambda k, v: v, name="w"), "filter_f"),
    ("reduce_by_window", lambda s: s.reduce_by_window(lambda a: a, 2, name="w"), "f(a, b)"),
    ("transform", lambda s: s.transform(lambda a, b, c: a), "(batch) or (time, batch)"),
    ("transform", lambda s: s.transform(lambda: None), "(batch) or (time, batch)"),
    ("transform_with", lambda s: s.transform_with(lambda a: a, s), "f(batch, other) or f(time, batch, other)"),
    ("foreach_batch", lambda s: s.foreach_batch(lambda: None), "(batch) or (time, batch)"),
    ("foreach_batch", lambda s: s.foreach_batch(lambda a, b, c: None), "(batch) or (time, batch)"),
]


@pytest.mark.parametrize(("op", "call", "shape"), WRONG_ARITY, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(WRONG_ARITY)])
def test_wrong_arity(s, op, call, shape):
    with pytest.raises(ConfigError) as info:
        call(s)
    msg = str(info.value)
    assert msg.startswith(op + ":")
    assert shape in msg


def test_arity_message_says_what_the_function_takes(s):
    def my_update(values):
        return values

    with pytest.raises(ConfigError) as info:
        s.update_state_by_key(my_update, name="u")
    msg = str(info.value)
    assert "my_update" in msg and "takes 1 argument" in msg and "2 arguments" in msg


def test_flexible_signatures_are_accepted(s):
    s.map(lambda x, y=1: x)
    s.map(lambda *args: args[0])
    s.reduce_by_key(max)  # builtin: signature unknown, accepted
    s.reduce_by_key(lambda *ab: ab[0])
    s.update_state_by_key(lambda vs, old=None, *rest: old, name="u")
    s.map_with_state(lambda k, v, st, extra=None: v, name="m")
    s.transform(lambda b: b)
    s.transform(lambda t, b: b)
    s.transform_with(lambda t, a, b: a, s)

    class Adder:
        def __call__(self, a, b):
            return a + b

    s.reduce_by_key(Adder())
    s.map(str)


# -- partitions ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
@pytest.mark.parametrize(
    "op",
    [
        "repartition",
        "reduce_by_key",
        "group_by_key",
        "combine_by_key",
        "join",
        "left_outer_join",
        "right_outer_join",
        "full_outer_join",
        "cogroup",
        "reduce_by_key_and_window",
        "count_by_value_and_window",
        "group_by_key_and_window",
        "update_state_by_key",
    ],
)
def test_bad_num_partitions(s, op, bad):
    calls = {
        "repartition": lambda n: s.repartition(n),
        "reduce_by_key": lambda n: s.reduce_by_key(add, n),
        "group_by_key": lambda n: s.group_by_key(n),
        "combine_by_key": lambda n: s.combine_by_key(lambda v: v, add, add, n),
        "join": lambda n: s.join(s, n),
        "left_outer_join": lambda n: s.left_outer_join(s, n),
        "right_outer_join": lambda n: s.right_outer_join(s, n),
        "full_outer_join": lambda n: s.full_outer_join(s, n),
        "cogroup": lambda n: s.cogroup(s, n),
        "reduce_by_key_and_window": lambda n: s.reduce_by_key_and_window(add, 2, num_partitions=n, name="w"),
        "count_by_value_and_window": lambda n: s.count_by_value_and_window(2, num_partitions=n, name="w"),
        "group_by_key_and_window": lambda n: s.group_by_key_and_window(2, num_partitions=n, name="w"),
        "update_state_by_key": lambda n: s.update_state_by_key(lambda vs, old: old, num_partitions=n, name="u"),
    }
    with pytest.raises(ConfigError) as info:
        calls[op](bad)
    assert "num_partitions" in str(info.value)
    assert repr(bad) in str(info.value)


def test_repartition_needs_a_count(s):
    with pytest.raises(ConfigError, match="repartition: num_partitions"):
        s.repartition(None)


@pytest.mark.parametrize("bad", [0, -2, "3", True])
def test_bad_source_partitions(ssc, bad):
    with pytest.raises(ConfigError, match="queue_stream: num_partitions"):
        ssc.queue_stream([[1]], name="q1", num_partitions=bad)
    with pytest.raises(ConfigError, match="rate_stream: num_partitions"):
        ssc.rate_stream(10, name="r1", num_partitions=bad)


def test_batch_level_num_partitions():
    b = Batch([[("a", 1)]])
    for call in (lambda: b.reduce_by_key(add, 0), lambda: b.group_by_key(-1), lambda: b.join(b, 0), lambda: b.cogroup(b, num_partitions="2")):
        with pytest.raises(ConfigError, match="num_partitions"):
            call()


# -- names and codecs -----------------------------------------------------------------------


def test_duplicate_stateful_names(s):
    s.window(2, name="dup")
    with pytest.raises(ConfigError, match="'dup' is already used"):
        s.update_state_by_key(lambda vs, old: old, name="dup")
    with pytest.raises(ConfigError, match="'dup' is already used"):
        s.map_with_state(lambda k, v, st: v, name="dup")
    with pytest.raises(ConfigError, match="'dup' is already used"):
        s.reduce_by_key_and_window(add, 2, name="dup")


def test_duplicate_source_names(ssc, s):
    with pytest.raises(ConfigError, match="'q' is already used"):
        ssc.queue_stream([], name="q")
    with pytest.raises(ConfigError, match="'q' is already used"):
        ssc.rate_stream(5, name="q")
    with pytest.raises(ConfigError, match="'q' is already used"):
        s.window(2, name="q")  # sources and stateful operators share one namespace
    s.window(2, name="st")
    with pytest.raises(ConfigError, match="'st' is already used"):
        ssc.constant_stream([1], name="st")


def test_a_name_taken_by_a_derived_one_says_so(ssc, s):
    """Following a swapped-operator refusal halfway (pinning one of two unnamed operators to KIND#1, created
    after the other) clashes with the unnamed one's derived name: the message says that, and to name every one."""
    upd = lambda vs, old: old  # noqa: E731
    with pytest.warns(DerivedNameWarning):
        s.update_state_by_key(upd)
    with pytest.raises(ConfigError, match=r"an unnamed update_state_by_key created before this one .* name every update_state_by_key"):
        s.update_state_by_key(upd, name="update_state_by_key#1")
    with pytest.warns(DerivedNameWarning):
        ssc.queue_stream([])
    with pytest.raises(ConfigError, match=r"an unnamed queue created before this one .* name every queue"):
        ssc.queue_stream([], name="queue#1")
    s.window(2, name="mine")
    with pytest.raises(ConfigError, match=r"'mine' is already used by another stateful operator or source; names must be unique$"):
        s.update_state_by_key(upd, name="mine")  # a user-given name: nothing about derived names


def test_duplicate_custom_source_names(ssc, s):
    from streamkeep.sources import ConstantSource

    ssc.add_source(ConstantSource([1], name="custom"))
    with pytest.raises(ConfigError, match="'custom'"):
        ssc.add_source(ConstantSource([2], name="custom"))
    with pytest.raises(ConfigError, match="'q'"):
        ssc.add_source(ConstantSource([2], name="q"))  # taken by queue_stream
    with pytest.raises(ConfigError, match="'custom' is already used"):
        s.window(2, name="custom")
    s.window(2, name="win")
    with pytest.raises(ConfigError, match="'win' is already used"):
        ssc.add_source(ConstantSource([2], name="win"))
    for bad in ("", None):
        with pytest.raises(ConfigError, match="non-empty string"):
            ssc.add_source(ConstantSource([2], name=bad))


@pytest.mark.parametrize("bad", ["", 3, b"name"])
def test_bad_names(ssc, s, bad):
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        s.window(2, name=bad)
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        ssc.queue_stream([], name=bad)


def test_unknown_codec(s):
    with pytest.raises(ConfigError, match="unknown codec 'json'.*msgpack.*pickle"):
        s.window(2, name="w", codec="json")
    with pytest.raises(ConfigError, match="unknown codec 'yaml'"):
        s.update_state_by_key(lambda vs, old: old, name="u", codec="yaml")
    with pytest.raises(ConfigError, match="unknown codec"):
        s.map_with_state(lambda k, v, st: v, name="m", codec="")
    with pytest.raises(ConfigError, match="unknown codec"):
        s.reduce_by_key_and_window(add, 2, name="r", codec="json")
    with pytest.raises(ConfigError, match="unknown codec 'json'"):
        sk.StreamingContext(1.0, codec="json")
    s.window(2, name="ok", codec="pickle")


def test_derived_name_warning_for_stateful_operators(s):
    with pytest.warns(DerivedNameWarning, match="window#1"):
        s.window(2)
    with pytest.warns(DerivedNameWarning, match="window#2"):
        s.window(3)
    with pytest.warns(DerivedNameWarning, match="update_state_by_key#1"):
        s.update_state_by_key(lambda vs, old: old)
    with pytest.warns(DerivedNameWarning, match="map_with_state#1.*name="):
        s.map_with_state(lambda k, v, st: v)
    with pytest.warns(DerivedNameWarning, match="reduce_by_key_and_window"):
        s.reduce_by_key_and_window(add, 2)
    with pytest.warns(DerivedNameWarning):
        s.count_by_window(2)
    with pytest.warns(DerivedNameWarning):
        s.group_by_key_and_window(2)


def test_derived_name_warning_points_at_the_callers_line(ssc, s):
    calls = [
        lambda: s.update_state_by_key(lambda vs, old: old),
        lambda: s.window(2),
        lambda: s.count_by_window(2),  # three operator calls deep inside streamkeep
        lambda: s.group_by_key_and_window(2),
        lambda: ssc.queue_stream([]),
    ]
    for call in calls:
        with pytest.warns(DerivedNameWarning) as rec:
            call()
        assert [w.filename for w in rec] == [__file__]


def test_derived_names_never_reuse_a_user_name(s):
    s.window(2, name="window#1")
    with pytest.warns(DerivedNameWarning, match="window#2"):
        s.window(2)


def test_derived_name_warning_for_sources(ssc):
    with pytest.warns(DerivedNameWarning, match="queue#1"):
        ssc.queue_stream([])
    with pytest.warns(DerivedNameWarning, match="rate#1"):
        ssc.rate_stream(10)
    with pytest.warns(DerivedNameWarning, match="constant#1"):
        ssc.constant_stream([1])


def test_no_warning_when_named(ssc, s, recwarn):
    s.window(2, name="w").count_by_window(2, name="c")
    s.update_state_by_key(lambda vs, old: old, name="u")
    ssc.rate_stream(1, name="r")
    assert not [w for w in recwarn.list if issubclass(w.category, DerivedNameWarning)]


# -- other build-time checks ---------------------------------------------------------------------


def test_streams_from_different_contexts(s):
    other = sk.StreamingContext(1.0).queue_stream([], name="other")
    for call in (lambda: s.union(other), lambda: s.join(other), lambda: s.transform_with(lambda a, b: a, other)):
        with pytest.raises(ConfigError, match="same StreamingContext"):
            call()


def test_combining_streams_with_different_slides(s):
    w = s.window(4, 2, name="w")
    for call in (lambda: s.union(w), lambda: s.join(w), lambda: w.cogroup(s), lambda: s.transform_with(lambda a, b: a, w)):
        with pytest.raises(ConfigError, match="1000 ms and 2000 ms|2000 ms and 1000 ms"):
            call()


def test_context_union_needs_streams(ssc):
    with pytest.raises(ConfigError, match="at least one"):
        ssc.union()


def test_pprint_num(s):
    for bad in (-1, "3", 1.5):
        with pytest.raises(ConfigError, match="pprint"):
            s.pprint(bad)


def test_write_to_needs_a_sink(s):
    with pytest.raises(ConfigError, match="not a Sink"):
        s.write_to(object())


@pytest.mark.parametrize("bad", [0, -1, "2"])
def test_map_with_state_timeout(s, bad):
    with pytest.raises(ConfigError, match="timeout"):
        s.map_with_state(lambda k, v, st: v, name="m", timeout=bad)


@pytest.mark.parametrize("bad", [[1, 2], "ab c", [("a", 1, 2)], 5])
def test_bad_initial_state(s, bad):
    with pytest.raises(ConfigError, match="initial"):
        s.update_state_by_key(lambda vs, old: old, name="u", initial=bad)


def test_bad_context_options():
    with pytest.raises(ConfigError, match="executor"):
        sk.StreamingContext(1.0, executor="spark")
    for bad in (0, -1, "3"):
        with pytest.raises(ConfigError, match="snapshot_every"):
            sk.StreamingContext(1.0, snapshot_every=bad)


def test_rate_stream_rate(ssc):
    for bad in (0, -5, "10"):
        with pytest.raises(ConfigError, match="rows_per_second"):
            ssc.rate_stream(bad, name=f"r{bad}")


def test_building_the_graph_runs_no_user_function(ssc):
    called = []

    def f(*args):
        called.append(args)
        return args[0]

    s = ssc.queue_stream([[("a", 1)]], name="src")
    out = s.map(f).filter(f).reduce_by_key(f).transform(f).update_state_by_key(f, name="u")
    out.window(2, name="w").reduce_by_key_and_window(f, 2, inv_f=f, filter_f=f, name="r").foreach_batch(f)
    s.map_with_state(f, name="m").state_snapshots()
    assert called == []


def test_a_job_without_outputs_is_rejected(ssc, s):
    s.map(lambda x: x)
    with pytest.raises(ConfigError, match="no output operations"):
        ssc.run(1)


def test_transform_must_return_a_batch(ssc, s):
    s.transform(lambda b: None).write_to(ListSink())
    with pytest.raises(ConfigError, match="returned None"):
        ssc.run(1)


def test_adding_to_a_running_context_is_rejected(ssc, s):
    s.write_to(ListSink())
    ssc.run(1)
    with pytest.raises(ConfigError, match="graph is fixed once the context has started"):
        ssc.queue_stream([], name="late")


# -- sink names (issue 10.6) ----------------------------------------------------------


def test_duplicate_sink_names_are_refused(s):
    s.write_to(ListSink("out"))
    with pytest.raises(ConfigError, match="already has a sink named 'out'; sink names must be unique"):
        s.map(lambda r: r).write_to(ListSink("out"))


def test_one_sink_object_used_twice_is_refused(s):
    sink = ListSink("out")
    s.write_to(sink)
    with pytest.raises(ConfigError, match="sink 'out' is already an output of this job"):
        s.map(lambda r: r).write_to(sink)


def test_two_redis_sinks_with_one_name_are_refused(s):
    from streamkeep.sinks import RedisSink

    s.write_to(RedisSink("redis://127.0.0.1:1/0", lambda pipe, records: None, name="counts"))
    with pytest.raises(ConfigError, match="sink named 'counts'"):
        s.write_to(RedisSink("redis://127.0.0.1:1/0", lambda pipe, records: None, name="counts"))


def test_a_text_file_dead_letter_sink_takes_part_in_the_sink_name_check(ssc, tmp_path):
    """The undecodable-lines sink of text_file_stream is written with the batch time like any sink: a second sink
    of its name would share its marker (and skip its batches), so either order is refused."""
    ssc.text_file_stream(str(tmp_path), name="lines", on_error=ListSink("bad")).write_to(ListSink("out"))
    with pytest.raises(ConfigError, match="sink named 'bad'"):
        ssc.queue_stream([], name="q").write_to(ListSink("bad"))
    with pytest.raises(ConfigError, match="sink named 'out'"):
        ssc.text_file_stream(str(tmp_path), name="lines2", on_error=ListSink("out"))
    letters = ListSink("letters")
    ssc.queue_stream([], name="q2").map(lambda r: r, on_error=letters).pprint()
    with pytest.raises(ConfigError, match="sink 'letters' is already an output of this job"):
        ssc.text_file_stream(str(tmp_path), name="lines3", on_error=letters)


def test_sink_name_must_be_a_non_empty_string(s):
    with pytest.raises(ConfigError, match="non-empty string"):
        s.write_to(ListSink(""))


def test_sinks_with_distinct_names_are_accepted(ssc, s):
    a, b = ListSink("a"), ListSink("b")
    s.write_to(a)
    s.map(lambda r: r).write_to(b)
    ssc.run(1)
    assert a.batches == b.batches == [(1000, [("a", 1)])]


# -- the graph is fixed once started (issue 10.9) -------------------------------------


def _late_additions(ssc, s):
    """Every kind of thing a user may add to a graph."""
    return {
        "map": lambda: s.map(lambda r: r),
        "reduce_by_key": lambda: s.reduce_by_key(add),
        "window": lambda: s.window(2, name="late-window"),
        "update_state_by_key": lambda: s.update_state_by_key(lambda vs, old: old, name="late-state"),
        "foreach_batch": lambda: s.foreach_batch(lambda b: None),
        "write_to": lambda: s.write_to(ListSink("late")),
        "pprint": lambda: s.pprint(),
    }


@pytest.mark.parametrize("what", ["map", "reduce_by_key", "window", "update_state_by_key", "foreach_batch", "write_to", "pprint"])
def test_adding_an_operator_after_run_is_refused(ssc, s, what):
    sink = ListSink()
    s.write_to(sink)
    ssc.run(1)
    with pytest.raises(ConfigError, match="the operator graph is fixed once the context has started"):
        _late_additions(ssc, s)[what]()
    ssc.run(1)
    assert [t for t, _ in sink.batches] == [1000, 2000]


def test_adding_an_output_after_start_is_refused():
    clock = ManualClock()
    ssc = sk.StreamingContext(1.0, clock=clock)
    s = ssc.queue_stream([[1]], name="q")
    s.write_to(ListSink())
    ssc.start()
    try:
        with pytest.raises(ConfigError, match="graph is fixed"):
            s.map(lambda r: r).foreach_batch(lambda b: None)
    finally:
        ssc.stop()


def test_adding_after_get_or_create_is_refused(tmp_path):
    url = str(tmp_path / "ckpt")

    def setup():
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.rate_stream(1, name="r").write_to(ListSink())
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    try:
        with pytest.raises(ConfigError, match="graph is fixed"):
            ssc.rate_stream(1, name="late")
    finally:
        ssc.stop()


def test_a_failed_start_leaves_the_graph_open(ssc, s):
    s.map(lambda r: r)
    with pytest.raises(ConfigError, match="no output operations"):
        ssc.run(1)
    sink = ListSink()
    s.write_to(sink)  # still allowed: nothing started
    ssc.run(1)
    assert sink.batches == [(1000, [("a", 1)])]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"keep_commits": 0}, "keep_commits must be a positive int"),
        ({"keep_commits": "3"}, "keep_commits must be a positive int"),
        ({"lease_timeout_s": -1}, "lease_timeout_s must be a positive number"),
        ({"lease_timeout_s": 0}, "lease_timeout_s must be a positive number"),
        ({"lease_timeout_s": "10"}, "lease_timeout_s must be a positive number"),
        ({"lease_timeout_s": float("nan")}, "lease_timeout_s must be a positive number"),
    ],
)
def test_retention_and_lease_settings_are_checked_when_built(kw, match):
    """A zero/negative/str keep_commits or lease_timeout_s was accepted (a negative lease expires at once: any other
    driver takes the checkpoint over; a str fails deep inside retention or the heartbeat)."""
    with pytest.raises(ConfigError, match=match):
        sk.StreamingContext(1.0, checkpoint="/nonexistent/never-created", **kw)


def test_a_kafka_dead_letter_sink_takes_part_in_the_sink_name_check(ssc):
    """The Kafka source's dead-letter sink is a sink of the job too (same check as text_file_stream's)."""
    pytest.importorskip("confluent_kafka")
    ssc.kafka_stream("t", bootstrap_servers="127.0.0.1:1", name="k", on_error=ListSink("dead")).pprint()
    with pytest.raises(ConfigError, match="sink named 'dead'"):
        ssc.queue_stream([], name="q").write_to(ListSink("dead"))


@pytest.mark.parametrize("bad", [5, b"ckpt", "", ["ckpt"]])
def test_a_checkpoint_that_is_not_a_path_is_refused_when_built(bad, tmp_path):
    """checkpoint=5 was accepted and failed at the first batch with `TypeError: argument of type 'int' is not
    iterable` from the storage layer; get_or_create and ssc.checkpoint() likewise."""
    with pytest.raises(ConfigError, match=r"StreamingContext: checkpoint must be a directory path or fsspec URL"):
        sk.StreamingContext(1.0, checkpoint=bad)
    with pytest.raises(ConfigError, match=r"get_or_create: checkpoint must be"):
        sk.StreamingContext.get_or_create(bad, lambda: sk.StreamingContext(1.0))
    ctx = sk.StreamingContext(1.0)
    with pytest.raises(ConfigError, match=r"checkpoint\(\): checkpoint must be"):
        ctx.checkpoint(bad)


def test_a_pathlib_checkpoint_is_taken_as_its_path(tmp_path):
    """A pathlib.Path checkpoint (the usual way to build paths) failed at the first batch with a TypeError."""
    url = tmp_path / "ckpt"
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ctx = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ctx.queue_stream([[("a", 1)], [("a", 2)]], name="q").update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="n").write_to(sink)
        return ctx

    ctx = sk.StreamingContext.get_or_create(url, setup)
    ctx.run(max_batches=1)
    ctx.stop()
    assert ctx.checkpoint_url == str(url) and (url / "CHECKPOINT").exists()
    ctx = sk.StreamingContext.get_or_create(url, setup)
    assert ctx.restored
    ctx.run(max_batches=1)
    ctx.stop()
    assert [records for _, records in sink.batches] == [[("a", 1)], [("a", 3)]]


def test_starting_a_stopped_context_says_to_build_a_new_one():
    """It said only "start() is not allowed: the context is stopped"."""
    ctx = sk.StreamingContext(1.0, clock=ManualClock())
    ctx.queue_stream([[1]], name="q").foreach_batch(lambda b: None)
    ctx.run(max_batches=1)
    ctx.stop()
    with pytest.raises(ConfigError, match=r"the context is stopped \(a stopped context cannot be restarted: build a new one"):
        ctx.start()


# -- the context's own arguments (found by trying them as a new user) ----------------


@pytest.mark.parametrize("interval", [float("inf"), float("-inf")])
def test_an_infinite_batch_interval_is_a_config_error(interval):
    with pytest.raises(ConfigError, match="batch_interval must be positive and finite"):
        sk.StreamingContext(interval)


def test_an_infinite_window_is_a_config_error(s):
    with pytest.raises(ConfigError, match="must be positive and finite"):
        s.window(float("inf"), name="w")


@pytest.mark.parametrize("max_batches", [-1, "2", 1.5, True])
def test_run_with_a_bad_max_batches_is_a_config_error_before_any_batch(max_batches):
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = ListSink()
    ssc.rate_stream(2, name="r").write_to(sink)
    with pytest.raises(ConfigError, match=r"run\(\): max_batches must be None .* or an int >= 0"):
        ssc.run(max_batches=max_batches)
    assert sink.batches == []
    assert ssc.run(max_batches=1) == 1  # the context is still usable


def test_a_clock_that_is_not_a_clock_is_a_config_error():
    with pytest.raises(ConfigError, match=r"clock must be None .*ManualClock\(\), got 5"):
        sk.StreamingContext(1.0, clock=5)


def test_a_misspelt_kafka_option_is_a_config_error_naming_the_right_one():
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match=r"kafka_stream 'events': unknown option 'starting_offset' \(did you mean 'starting_offsets'\?\)"):
        ssc.kafka_stream("events", bootstrap_servers="127.0.0.1:9", name="events", starting_offset="latest")


def test_a_kafka_on_error_that_is_neither_a_callable_nor_a_sink_is_named():
    """on_error="skip" (the per-record operators' policies are strings) did not say what it got or what None does."""
    pytest.importorskip("confluent_kafka")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match=r"on_error must be a callable.* or None \(the default: an undecodable record fails the batch\), got 'skip'"):
        ssc.kafka_stream("events", bootstrap_servers="127.0.0.1:9", name="events", on_error="skip")


@pytest.mark.parametrize("bad", [5, [], [5], ["events", ""], None])
def test_kafka_topics_that_are_not_topic_names_are_a_config_error(bad):
    """kafka_stream(5, ...) was `TypeError: 'int' object is not iterable` from inside the engine."""
    pytest.importorskip("confluent_kafka")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match=r"kafka_stream: topics must be a topic name or a non-empty list of topic names"):
        ssc.kafka_stream(bad, bootstrap_servers="127.0.0.1:9", name="events")


def test_get_or_create_with_a_setup_that_is_not_a_function(tmp_path):
    """get_or_create(url, 5) raised a bare "'int' object is not callable"; get_or_create(url, setup()) the same."""
    url = str(tmp_path / "c")
    with pytest.raises(ConfigError, match="setup must be a function taking no arguments .* got int"):
        sk.StreamingContext.get_or_create(url, 5)
    built = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    try:
        with pytest.raises(ConfigError, match=r"got a StreamingContext: pass the function that builds it \(setup, not setup\(\)\)"):
            sk.StreamingContext.get_or_create(url, built)
    finally:
        built.stop()

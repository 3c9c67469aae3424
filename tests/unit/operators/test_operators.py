"""Golden per-batch outputs of every DStream operator, computed by hand.

`run_batches` runs with a ManualClock and a 1 s batch interval: batch i (from 1)
has time i * 1000 ms, and a window with slide s produces at the batch times that
are multiples of s (the first one at s). Batches where the output produced
nothing (windows between slides) are left out of its result. Spark Streaming's
semantics are the reference throughout.
"""

from __future__ import annotations

import contextlib
import io
import operator
import os
from datetime import datetime, timezone

import pytest

from streamkeep import Batch, UserFunctionError
from streamkeep.errors import StateError
from streamkeep.testing import ListSink, ManualClock, run_batches

add = operator.add
sub = operator.sub


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def pairs(s):
    return s.map(lambda w: (w, 1))


def as_dicts(out):
    return [dict(b) for b in out]


# -- per record ----------------------------------------------------------------


def test_map():
    assert run_batches(lambda ssc, s: s.map(lambda x: x * 10), [[1, 2], [], [3]]) == [[10, 20], [], [30]]


def test_flat_map():
    out = run_batches(lambda ssc, s: s.flat_map(str.split), [["a b", "c"], [""], ["d"]])
    assert out == [["a", "b", "c"], [], ["d"]]


def test_filter():
    assert run_batches(lambda ssc, s: s.filter(lambda x: x % 2), [[1, 2, 3], [4]]) == [[1, 3], []]


def test_map_partitions_runs_once_per_partition():
    out = run_batches(lambda ssc, s: s.map_partitions(lambda it: [sum(it)]), [[1, 2, 3, 4, 5], []], num_partitions=3)
    # round-robin into 3 partitions: [1, 4], [2, 5], [3]
    assert out == [[5, 7, 3], [0, 0, 0]]


def test_glom():
    out = run_batches(lambda ssc, s: s.glom(), [[1, 2, 3, 4], [5]], num_partitions=3)
    assert out == [[[1, 4], [2], [3]], [[5], [], []]]
    assert run_batches(lambda ssc, s: s.glom(), [[1, 2]]) == [[[1, 2]]]


def test_map_values_and_flat_map_values():
    inp = [[("a", 1), ("b", 2)], [("a", 3)]]
    assert run_batches(lambda ssc, s: s.map_values(lambda v: v * 10), inp) == [[("a", 10), ("b", 20)], [("a", 30)]]
    out = run_batches(lambda ssc, s: s.flat_map_values(lambda v: range(v)), inp)
    assert out == [[("a", 0), ("b", 0), ("b", 1)], [("a", 0), ("a", 1), ("a", 2)]]


def test_repartition():
    out = run_batches(lambda ssc, s: s.repartition(2).glom(), [[1, 2, 3, 4, 5], []])
    assert out == [[[1, 3, 5], [2, 4]], [[], []]]
    # from 3 input partitions ([1, 4], [2, 5], [3]) round-robin into 2
    out = run_batches(lambda ssc, s: s.repartition(2).glom(), [[1, 2, 3, 4, 5]], num_partitions=3)
    assert out == [[[1, 2, 3], [4, 5]]]


# -- per batch -----------------------------------------------------------------


def test_reduce():
    assert run_batches(lambda ssc, s: s.reduce(add), [[1, 2, 3], [], [4]]) == [[6], [], [4]]
    assert run_batches(lambda ssc, s: s.reduce(add), [[1, 2, 3, 4], [5]], num_partitions=3) == [[10], [5]]


def test_count():
    assert run_batches(lambda ssc, s: s.count(), [[1, 2, 3], [], ["x"]]) == [[3], [0], [1]]
    assert run_batches(lambda ssc, s: s.count(), [[1, 2, 3, 4]], num_partitions=3) == [[4]]


def test_count_by_value():
    out = run_batches(lambda ssc, s: s.count_by_value(), [["a", "b", "a"], [], ["c"]], sort=True)
    assert out == [[("a", 2), ("b", 1)], [], [("c", 1)]]


def test_reduce_by_key():
    inp = [[("a", 1), ("b", 2), ("a", 3)], [("b", 5)], []]
    assert run_batches(lambda ssc, s: s.reduce_by_key(add), inp, sort=True) == [[("a", 4), ("b", 2)], [("b", 5)], []]


def test_reduce_by_key_multi_partition():
    words = ["a", "b", "a", "c", "a", "b", "d"]
    out = run_batches(lambda ssc, s: pairs(s).reduce_by_key(add), [words], num_partitions=3, sort=True)
    assert out == [[("a", 3), ("b", 2), ("c", 1), ("d", 1)]]
    parts = run_batches(lambda ssc, s: pairs(s).reduce_by_key(add, num_partitions=2).glom(), [words], num_partitions=3)
    assert len(parts[0]) == 2
    assert sorted(kv for p in parts[0] for kv in p) == [("a", 3), ("b", 2), ("c", 1), ("d", 1)]


def test_group_by_key():
    inp = [[("a", 1), ("b", 2), ("a", 3)], [("b", 5)]]
    assert run_batches(lambda ssc, s: s.group_by_key(), inp, sort=True) == [[("a", [1, 3]), ("b", [2])], [("b", [5])]]
    out = run_batches(lambda ssc, s: s.group_by_key(), [[("a", 1), ("a", 2), ("a", 3), ("b", 4)]], num_partitions=3, sort=True)
    # values of one key come partition by partition: [1] from p0 ... in partition order
    assert out == [[("a", [1, 2, 3]), ("b", [4])]]


def test_combine_by_key():
    inp = [[("a", 1), ("b", 2), ("a", 3), ("a", 5)]]
    out = run_batches(
        lambda ssc, s: s.combine_by_key(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1), lambda x, y: (x[0] + y[0], x[1] + y[1])),
        inp,
        num_partitions=3,
        sort=True,
    )
    assert out == [[("a", (9, 3)), ("b", (2, 1))]]


LEFT = [[("a", 1), ("b", 2)], [("a", 3)], [], [("c", 4), ("c", 5)]]
RIGHT = [[("a", "x"), ("d", "y")], [("a", "z"), ("a", "w")], [("e", "v")], []]


def _joined(method):
    def setup(ssc, s):
        other = ssc.queue_stream(RIGHT, name="right")
        return getattr(s, method)(other)

    return run_batches(setup, LEFT, sort=True)


def test_join():
    assert _joined("join") == [[("a", (1, "x"))], [("a", (3, "w")), ("a", (3, "z"))], [], []]


def test_left_outer_join():
    assert _joined("left_outer_join") == [
        [("a", (1, "x")), ("b", (2, None))],
        [("a", (3, "w")), ("a", (3, "z"))],
        [],
        [("c", (4, None)), ("c", (5, None))],
    ]


def test_right_outer_join():
    assert _joined("right_outer_join") == [
        [("a", (1, "x")), ("d", (None, "y"))],
        [("a", (3, "w")), ("a", (3, "z"))],
        [("e", (None, "v"))],
        [],
    ]


def test_full_outer_join():
    assert _joined("full_outer_join") == [
        [("a", (1, "x")), ("b", (2, None)), ("d", (None, "y"))],
        [("a", (3, "w")), ("a", (3, "z"))],
        [("e", (None, "v"))],
        [("c", (4, None)), ("c", (5, None))],
    ]


def test_cogroup():
    assert _joined("cogroup") == [
        [("a", ([1], ["x"])), ("b", ([2], [])), ("d", ([], ["y"]))],
        [("a", ([3], ["z", "w"]))],
        [("e", ([], ["v"]))],
        [("c", ([4, 5], []))],
    ]


def test_join_multi_partition():
    def setup(ssc, s):
        other = ssc.queue_stream([[("a", "x"), ("b", "y"), ("a", "z")]], name="right", num_partitions=2)
        return s.join(other, num_partitions=4)

    out = run_batches(setup, [[("a", 1), ("b", 2), ("c", 3), ("a", 4)]], num_partitions=3, sort=True)
    assert out == [[("a", (1, "x")), ("a", (1, "z")), ("a", (4, "x")), ("a", (4, "z")), ("b", (2, "y"))]]


def test_union():
    def setup(ssc, s):
        b = ssc.queue_stream([[10], [], [30]], name="b")
        c = ssc.queue_stream([[100], [200]], name="c")
        return s.union(b, c)

    assert run_batches(setup, [[1], [2], [3]]) == [[1, 10, 100], [2, 200], [3, 30]]


def test_context_union():
    def setup(ssc, s):
        return ssc.union(s, ssc.queue_stream([["x"]], name="b"))

    assert run_batches(setup, [["a"], ["b"]]) == [["a", "x"], ["b"]]


def test_union_keeps_partitions():
    def setup(ssc, s):
        return s.union(ssc.queue_stream([[1, 2]], name="b", num_partitions=2)).glom()

    assert run_batches(setup, [[7, 8, 9]], num_partitions=3) == [[[7], [8], [9], [1], [2]]]


def test_transform_one_arg():
    out = run_batches(lambda ssc, s: s.transform(lambda b: b.sort_by(lambda x: -x)), [[1, 3, 2], []])
    assert out == [[3, 2, 1], []]


def test_transform_two_args_gets_the_batch_time():
    out = run_batches(lambda ssc, s: s.transform(lambda t, b: b.map(lambda x: (t, x))), [["a"], ["b"]])
    assert out == [[(utc(1), "a")], [(utc(2), "b")]]
    assert out[0][0][0].tzinfo is timezone.utc


def test_transform_may_return_a_list():
    assert run_batches(lambda ssc, s: s.transform(lambda b: [b.count()]), [[1, 2], []]) == [[2], [0]]


def test_transform_with():
    def setup(ssc, s):
        other = ssc.queue_stream([["x"], ["y", "z"]], name="other")
        return s.transform_with(lambda a, b: a.cartesian(b), other)

    assert run_batches(setup, [[1], [2]]) == [[(1, "x")], [(2, "y"), (2, "z")]]


def test_transform_with_time():
    def setup(ssc, s):
        other = ssc.queue_stream([[10], [20]], name="other")
        return s.transform_with(lambda t, a, b: a.union(b).map(lambda x: (t.second, x)), other)

    assert run_batches(setup, [[1], [2]]) == [[(1, 1), (1, 10)], [(2, 2), (2, 20)]]


def test_transform_error_names_operator_and_time():
    def bad(b):
        raise RuntimeError("nope")

    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: s.transform(bad), [[1]])
    assert info.value.operator == "transform"
    assert info.value.batch_time_ms == 1000
    assert isinstance(info.value.__cause__, RuntimeError)


def test_map_error_names_operator_and_time():
    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: s.map(lambda x: 1 // x), [[1], [2, 0]])
    assert info.value.operator == "map"
    assert info.value.batch_time_ms == 2000
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "2000" in str(info.value)


def test_shared_stream_runs_user_functions_once_per_record():
    calls = []

    def setup(ssc, s):
        m = s.map(lambda x: calls.append(x) or x * 2)
        m.foreach_batch(lambda b: b.collect())
        m.pprint(1)  # take() on the same batch
        return m.union(m.filter(lambda x: x > 2))

    with contextlib.redirect_stdout(io.StringIO()):
        out = run_batches(setup, [[1, 2], [3]])
    assert out == [[2, 4, 4], [6, 6]]
    assert calls == [1, 2, 3]


# -- windows ---------------------------------------------------------------------


def test_window_drains_after_input_ends(executor):
    out = run_batches(lambda ssc, s: s.window(3, name="w"), [[1], [2], [3], [4]], executor=executor)
    # windows (t-3, t] at t = 1..6; 5 and 6 are the drain-out after the input ended
    assert out == [[1], [1, 2], [1, 2, 3], [2, 3, 4], [3, 4], [4]]


def test_window_drains_falsy_records(executor):
    # records that are falsy (0, "", None) still hold the window open
    out = run_batches(lambda ssc, s: s.window(2, name="w"), [[0], ["", None]], executor=executor)
    assert out == [[0], [0, "", None], ["", None]]


def test_window_with_slide_larger_than_batch_interval(executor):
    out = run_batches(lambda ssc, s: s.window(4, 2, name="w"), [[1], [2], [3], [4], [5]], executor=executor)
    # outputs at t = 2, 4, 6, 8: (t-4, t]
    assert out == [[1, 2], [1, 2, 3, 4], [3, 4, 5], [5]]


def test_window_tumbling_and_length_shorter_than_slide(executor):
    inp = [[1], [2], [3], [4], [5], [6]]
    assert run_batches(lambda ssc, s: s.window(3, 3, name="w"), inp, executor=executor) == [[1, 2, 3], [4, 5, 6]]
    # batches 1, 3, 5 fall in no window
    assert run_batches(lambda ssc, s: s.window(1, 2, name="w"), inp, executor=executor) == [[2], [4], [6]]


def test_window_with_timedelta_and_multiple_partitions(executor):
    from datetime import timedelta

    out = run_batches(lambda ssc, s: s.window(timedelta(seconds=2), name="w").glom(), [[1, 2], [3]], num_partitions=2, executor=executor)
    # a window is the union of its batches' partitions (each batch here has 2)
    assert out == [[[1], [2]], [[1], [2], [3], []], [[3], [], [], []]]


def test_window_of_a_windowed_stream(executor):
    out = run_batches(lambda ssc, s: s.window(2, 2, name="w1").window(4, 2, name="w2"), [[1], [2], [3], [4], [5], [6]], executor=executor)
    assert out == [[1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6]]


def test_window_then_per_batch_operators(executor):
    out = run_batches(lambda ssc, s: pairs(s.window(2, name="w")).reduce_by_key(add), [["a"], ["a", "b"], ["b"]], sort=True, executor=executor)
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 2)], [("b", 1)]]


@pytest.mark.parametrize("inv", [None, sub])
def test_reduce_by_window(inv, executor):
    inp = [[1, 2], [3], [], [4]]
    out = run_batches(lambda ssc, s: s.reduce_by_window(add, 2, inv_f=inv, name="w"), inp, executor=executor)
    # (t-2, t]: {1,2}; {1,2,3}; {3}; {4}; drain {4}
    assert out == [[3], [6], [3], [4], [4]]


@pytest.mark.parametrize("inv", [None, sub])
def test_reduce_by_window_sliding(inv, executor):
    inp = [[1], [2], [3], [4], [5], [6]]
    assert run_batches(lambda ssc, s: s.reduce_by_window(add, 3, 2, inv_f=inv, name="w"), inp, executor=executor) == [[3], [9], [15], [6]]
    assert run_batches(lambda ssc, s: s.reduce_by_window(add, 1, 2, inv_f=inv, name="w"), inp, executor=executor) == [[2], [4], [6]]
    assert run_batches(lambda ssc, s: s.reduce_by_window(add, 2, 3, inv_f=inv, name="w"), inp, executor=executor) == [[5], [11]]
    assert run_batches(lambda ssc, s: s.reduce_by_window(add, 5, 2, inv_f=inv, name="w"), inp, executor=executor) == [[3], [10], [20], [15], [6]]


def test_count_by_window(executor):
    out = run_batches(lambda ssc, s: s.count_by_window(3, name="w"), [[1], [2, 2], [3], [], [5, 5, 5]], executor=executor)
    # (t-3, t] at t = 1..7: 1; 3; 4; 3; 4; 3; drain 3 at t=7 (only batch 5 left)
    assert out == [[1], [3], [4], [3], [4], [3], [3]]


def test_count_by_window_sliding_multi_partition(executor):
    out = run_batches(lambda ssc, s: s.count_by_window(4, 2, name="w"), [[1, 2, 3], [4], [5, 6], [], [7]], num_partitions=3, executor=executor)
    # t=2: 4; t=4: 6; t=6: batches 3..6 -> 2 + 0 + 1 = 3; t=8: batch 5 -> 1
    assert out == [[4], [6], [3], [1]]


def test_count_by_value_and_window(executor):
    out = run_batches(lambda ssc, s: s.count_by_value_and_window(2, name="w"), [["a"], ["a", "b"], ["b"]], sort=True, executor=executor)
    # zero counts are dropped (Spark filters count > 0)
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 2)], [("b", 1)]]


def test_count_by_value_and_window_sliding(executor):
    inp = [["a", "b"], ["a"], ["c"], ["a"], []]
    out = run_batches(lambda ssc, s: s.count_by_value_and_window(3, 2, name="w"), inp, num_partitions=2, sort=True, executor=executor)
    # t=2: batches 1-2; t=4: 2-4; t=6: 4-6 (drain)
    assert out == [[("a", 2), ("b", 1)], [("a", 2), ("c", 1)], [("a", 1)]]


RBKW_INPUT = [["a"], ["a", "b"], ["b"]]


def test_reduce_by_key_and_window_without_inverse(executor):
    out = run_batches(lambda ssc, s: pairs(s).reduce_by_key_and_window(add, 2, name="w"), RBKW_INPUT, sort=True, executor=executor)
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 2)], [("b", 1)]]


def test_reduce_by_key_and_window_with_inverse_keeps_zero_keys(executor):
    out = run_batches(lambda ssc, s: pairs(s).reduce_by_key_and_window(add, 2, inv_f=sub, name="w"), RBKW_INPUT, sort=True, executor=executor)
    # as Spark's ReducedWindowedDStream: a key whose value went back to 0 stays unless filter_f drops it
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 2)], [("a", 0), ("b", 1)]]


def test_reduce_by_key_and_window_with_inverse_and_filter(executor):
    out = run_batches(
        lambda ssc, s: pairs(s).reduce_by_key_and_window(add, 2, inv_f=sub, filter_f=lambda kv: kv[1] > 0, name="w"), RBKW_INPUT, sort=True, executor=executor
    )
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 2)], [("b", 1)]]


def test_reduce_by_key_and_window_filter_without_inverse(executor):
    out = run_batches(
        lambda ssc, s: pairs(s).reduce_by_key_and_window(add, 2, filter_f=lambda kv: kv[1] > 1, name="w"), RBKW_INPUT, sort=True, executor=executor
    )
    assert out == [[], [("a", 2)], [("b", 2)], []]


@pytest.mark.parametrize("inv", [None, sub])
def test_reduce_by_key_and_window_sliding(inv, executor):
    inp = [[("a", 1)], [("b", 2)], [("a", 3)], [("a", 4), ("b", 5)], [("c", 6)], []]
    out = run_batches(lambda ssc, s: s.reduce_by_key_and_window(add, 3, 2, inv_f=inv, name="w"), inp, sort=True, executor=executor)
    # t=2: b1-2; t=4: b2-4; t=6: b4-6
    expected = [[("a", 1), ("b", 2)], [("a", 7), ("b", 7)], [("a", 4), ("b", 5), ("c", 6)]]
    assert as_dicts(out) == as_dicts(expected)


def test_reduce_by_key_and_window_num_partitions(executor):
    out = run_batches(
        lambda ssc, s: pairs(s).reduce_by_key_and_window(add, 2, num_partitions=3, name="w").glom(), [["a", "b", "c", "d", "a"]], num_partitions=2, executor=executor
    )
    assert [len(parts) for parts in out] == [3, 3]
    assert sorted(kv for p in out[0] for kv in p) == [("a", 2), ("b", 1), ("c", 1), ("d", 1)]


@pytest.mark.parametrize(("inp", "inv"), [([["a"], ["a"]], None), ([["a"], ["a"]], sub), ([["a", "a"]], None)])
def test_reduce_by_key_and_window_error_names_operator(inp, inv, executor):
    def bad(a, b):
        raise ValueError("boom")

    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: pairs(s).reduce_by_key_and_window(bad, 2, inv_f=inv, name="w"), inp, executor=executor)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.operator == "w"
    assert info.value.batch_time_ms == 1000 * len(inp)


def test_group_by_key_and_window(executor):
    inp = [[("a", 1)], [("a", 2), ("b", 3)], [("b", 4)]]
    out = run_batches(lambda ssc, s: s.group_by_key_and_window(2, name="w"), inp, sort=True, executor=executor)
    assert out == [[("a", [1])], [("a", [1, 2]), ("b", [3])], [("a", [2]), ("b", [3, 4])], [("b", [4])]]


def test_group_by_key_and_window_sliding(executor):
    inp = [[("a", 1)], [("a", 2), ("b", 3)], [("b", 4)], [("a", 5)]]
    out = run_batches(lambda ssc, s: s.group_by_key_and_window(3, 2, name="w"), inp, num_partitions=2, sort=True, executor=executor)
    # t=2: b1-2; t=4: b2-4; t=6: b4 (drain)
    assert out == [[("a", [1, 2]), ("b", [3])], [("a", [2, 5]), ("b", [3, 4])], [("a", [5])]]


# -- update_state_by_key -----------------------------------------------------------


def test_update_state_by_key_running_count(executor):
    def update(values, old):
        return sum(values) + (old or 0)

    out = run_batches(lambda ssc, s: pairs(s).update_state_by_key(update, name="u"), [["a", "b", "a"], [], ["b"]], sort=True, executor=executor)
    assert out == [[("a", 2), ("b", 1)], [("a", 2), ("b", 1)], [("a", 2), ("b", 2)]]


def test_update_runs_for_keys_without_new_values():
    calls = []  # filled by the update function: runs in this process with the local executor only

    def update(values, old):
        calls.append((values, old))
        return (old or 0) + len(values)

    run_batches(lambda ssc, s: pairs(s).update_state_by_key(update, name="u"), [["a", "a"], ["b"], []])
    assert sorted(calls, key=repr) == sorted(
        [([1, 1], None), ([], 2), ([1], None), ([], 2), ([], 1)],
        key=repr,
    )


def test_update_returning_none_removes_a_key(executor):
    def update(values, old):
        if not values:
            return None  # forget keys that got nothing this batch
        return (old or 0) + sum(values)

    inp = [["a", "b"], ["a"], ["a", "b"], [], ["c"]]
    out = run_batches(lambda ssc, s: pairs(s).update_state_by_key(update, name="u"), inp, sort=True, executor=executor)
    # b is removed at t=2 and comes back fresh at t=3
    assert out == [[("a", 1), ("b", 1)], [("a", 2)], [("a", 3), ("b", 1)], [], [("c", 1)]]


def test_update_returning_none_for_a_new_key_adds_nothing(executor):
    out = run_batches(lambda ssc, s: pairs(s).update_state_by_key(lambda vs, old: None if vs == [1] else len(vs), name="u"), [["a", "b", "b"]], executor=executor)
    assert out == [[("b", 2)]]


def test_update_state_by_key_initial_state(executor):
    def update(values, old):
        return (old or 0) + sum(values)

    out = run_batches(
        lambda ssc, s: pairs(s).update_state_by_key(update, name="u", initial=[("a", 10), ("z", 100)]), [["a"], ["b"]], sort=True, executor=executor
    )
    assert out == [[("a", 11), ("z", 100)], [("a", 11), ("b", 1), ("z", 100)]]


def test_update_state_by_key_initial_from_a_batch_and_removal(executor):
    initial = Batch([[("x", 1)], [("y", 2)]])
    out = run_batches(
        lambda ssc, s: pairs(s).update_state_by_key(lambda vs, old: None if old == 2 else (old or 0) + len(vs), name="u", initial=initial),
        [["x"]],
        sort=True,
        executor=executor,
    )
    assert out == [[("x", 2)]]


def test_update_state_by_key_multi_partition(executor):
    words = ["a", "b", "c", "a", "b", "a"]
    out = run_batches(
        lambda ssc, s: pairs(s).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u", num_partitions=2).glom(),
        [words, ["c"]],
        num_partitions=3,
        executor=executor,
    )
    assert [len(parts) for parts in out] == [2, 2]
    assert sorted(kv for p in out[0] for kv in p) == [("a", 3), ("b", 2), ("c", 1)]
    assert sorted(kv for p in out[1] for kv in p) == [("a", 3), ("b", 2), ("c", 2)]


def test_update_state_by_key_values_arrive_in_order(executor):
    out = run_batches(lambda ssc, s: s.update_state_by_key(lambda vs, old: (old or []) + vs, name="u"), [[("k", 1), ("k", 2)], [("k", 3)]], executor=executor)
    assert out == [[("k", [1, 2])], [("k", [1, 2, 3])]]


@pytest.mark.parametrize("fresh_tuple", [False, True])
def test_update_state_mutated_in_place_survives_a_restore(tmp_path, fresh_tuple, executor):
    """State that changed inside a tuple (a list appended to) must reach the checkpoint."""
    import streamkeep as sk

    def update(values, old):
        if old is None:
            return (0, [])
        old[1].extend(values)
        return (old[0], old[1]) if fresh_tuple else old

    def setup(sink):
        def build():
            ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ckpt"), clock=ManualClock(), snapshot_every=100, executor=executor)
            ssc.rate_stream(1, name="r").map(lambda r: ("k", r[0])).update_state_by_key(update, name="u").write_to(sink)
            return ssc

        return build

    first = ListSink()
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "ckpt"), setup(first))
    ssc.run(3)
    ssc.stop()
    assert first.batches[-1] == (3000, [("k", (0, [1, 2]))])
    second = ListSink()
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "ckpt"), setup(second))
    ssc.run(1)
    ssc.stop()
    assert second.batches == [(4000, [("k", (0, [1, 2, 3]))])]


def test_update_state_by_key_error_names_operator_and_time(executor):
    def update(values, old):
        if old is not None:
            raise KeyError("no")
        return 1

    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: pairs(s).update_state_by_key(update, name="counts"), [["a"], []], executor=executor)
    assert info.value.operator == "counts"
    assert info.value.batch_time_ms == 2000
    assert isinstance(info.value.__cause__, KeyError)
    assert "'a'" in str(info.value)


def test_update_state_by_key_blames_the_map_before_it_for_the_maps_error(executor):
    """update_state_by_key calls a trailing map's function from its own loop: the error still names the map and the record."""

    def pair(w):
        if w == "bad":
            raise KeyError("no")
        return (w, 1)

    with pytest.raises(UserFunctionError, match=r"in operator 'map'.*for record 'bad'") as info:
        run_batches(lambda ssc, s: s.map(pair).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u"), [["a", "bad"]], executor=executor)
    assert info.value.operator == "map"
    assert isinstance(info.value.__cause__, KeyError)


def test_update_state_by_key_after_a_dead_lettering_map():
    dead = ListSink("dead")
    out = run_batches(
        lambda ssc, s: s.map(lambda x: ("k", 10 // x), on_error=dead).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u"),
        [[1, 0, 2], [5]],
    )
    assert out == [[("k", 15)], [("k", 17)]]
    assert [d["record"] for _, batch in dead.batches for d in batch] == [0]


# -- map_with_state ------------------------------------------------------------------


def track(key, value, state):
    """Running sum per key; "del" removes the key; timeouts report the last state."""
    if state.is_timing_out():
        return ("timeout", key, value, state.get())
    if value == "del":
        existed = state.exists()
        state.remove()
        return ("removed", key, existed, state.exists())
    total = (state.get() if state.exists() else 0) + value
    state.update(total)
    return (key, total)


def test_map_with_state_exists_get_update_remove(executor):
    inp = [[("a", 1), ("b", 2), ("a", 3)], [("a", "del"), ("b", 1)], [("a", 5), ("c", "del")]]
    out = run_batches(lambda ssc, s: s.map_with_state(track, name="m"), inp, executor=executor)
    assert out == [
        [("a", 1), ("b", 2), ("a", 4)],
        [("removed", "a", True, False), ("b", 3)],
        [("a", 5), ("removed", "c", False, False)],
    ]


def test_map_with_state_snapshots(executor):
    inp = [[("a", 1), ("b", 2)], [("a", "del")], [], [("c", 7)]]
    out = run_batches(lambda ssc, s: s.map_with_state(track, name="m").state_snapshots(), inp, sort=True, executor=executor)
    assert out == [[("a", 1), ("b", 2)], [("b", 2)], [("b", 2)], [("b", 2), ("c", 7)]]


def test_map_with_state_initial(executor):
    inp = [[("a", 1)], [("z", 1)]]
    out = run_batches(lambda ssc, s: s.map_with_state(track, name="m", initial=[("a", 10), ("z", 20)]), inp, executor=executor)
    assert out == [[("a", 11)], [("z", 21)]]


def test_map_with_state_timeout(executor):
    # timeout 2 s: a key whose last record is at t times out at the first batch later than t + 2 s
    inp = [[("a", 1), ("b", 2)], [("a", 3)], [("b", "del")], [], [], []]

    def setup(ssc, s):
        m = s.map_with_state(track, name="m", timeout=2, initial=[("z", 100)])
        m.state_snapshots().write_to(snaps)
        return m

    snaps = ListSink("snaps")
    out = run_batches(setup, inp, executor=executor)
    assert out == [
        [("a", 1), ("b", 2)],
        [("a", 4)],
        [("removed", "b", True, False)],
        [("timeout", "z", None, 100)],  # initial state counts as touched at the first batch
        [("timeout", "a", None, 4)],
        [],
    ]
    assert [sorted(rs) for _, rs in snaps.batches] == [
        [("a", 1), ("b", 2), ("z", 100)],
        [("a", 4), ("b", 2), ("z", 100)],
        [("a", 4), ("z", 100)],
        [("a", 4)],
        [],
        [],
    ]


def test_map_with_state_a_record_resets_the_timeout(executor):
    inp = [[("a", 1)], [], [("a", 1)], [], [], []]
    out = run_batches(lambda ssc, s: s.map_with_state(track, name="m", timeout=2), inp, executor=executor)
    assert out == [[("a", 1)], [], [("a", 2)], [], [], [("timeout", "a", None, 2)]]


def test_map_with_state_reading_without_update_keeps_state(executor):
    def peek(key, value, state):
        return state.get() if state.exists() else None

    out = run_batches(lambda ssc, s: s.map_with_state(peek, name="m", initial=[("a", 5)]), [[("a", 0), ("b", 0)]], executor=executor)
    assert out == [[5, None]]


def test_map_with_state_cannot_update_a_timing_out_key(executor):
    def f(key, value, state):
        if state.is_timing_out():
            state.update(1)
        else:
            state.update(0)

    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: s.map_with_state(f, name="m", timeout=1), [[("a", 1)], [], []], executor=executor)
    assert isinstance(info.value.__cause__, StateError)
    assert info.value.operator == "m"
    assert info.value.batch_time_ms == 3000


def test_map_with_state_get_without_state_is_a_user_error(executor):
    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: s.map_with_state(lambda k, v, st: st.get(), name="m"), [[("a", 1)]], executor=executor)
    assert isinstance(info.value.__cause__, StateError)
    assert "exists()" in str(info.value.__cause__)


def test_map_with_state_multi_partition(executor):
    inp = [[("a", 1), ("b", 1), ("a", 1), ("c", 1), ("a", 1)]]
    out = run_batches(lambda ssc, s: s.map_with_state(track, name="m").state_snapshots(), inp, num_partitions=3, sort=True, executor=executor)
    assert out == [[("a", 3), ("b", 1), ("c", 1)]]


# -- outputs ---------------------------------------------------------------------------


def _ctx(batches, **kw):
    import streamkeep as sk

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    return ssc, ssc.queue_stream(batches, name="q", **kw)


def test_foreach_batch_with_and_without_time():
    ssc, s = _ctx([[1, 2], [], [3]])
    seen = []
    plain = []
    s.foreach_batch(lambda t, b: seen.append((t, b.collect())))
    s.foreach_batch(lambda b: plain.append(b.count()))
    ssc.run()
    ssc.stop()
    assert seen == [(utc(1), [1, 2]), (utc(2), []), (utc(3), [3])]
    for t, _ in seen:
        assert t.tzinfo is not None and t.utcoffset().total_seconds() == 0
    assert plain == [2, 0, 1]


def test_foreach_batch_error_names_output_and_time():
    ssc, s = _ctx([[1], [2]])

    def f(b):
        if 2 in b.collect():
            raise OSError("disk full")

    s.foreach_batch(f)
    with pytest.raises(UserFunctionError) as info:
        ssc.run()
    assert info.value.operator == "foreach_batch"
    assert info.value.batch_time_ms == 2000
    assert isinstance(info.value.__cause__, OSError)


def test_outputs_run_in_registration_order():
    ssc, s = _ctx([[1]])
    order = []
    s.foreach_batch(lambda b: order.append("first"))
    s.map(lambda x: x).foreach_batch(lambda b: order.append("second"))
    s.foreach_batch(lambda b: order.append("third"))
    ssc.run()
    ssc.stop()
    assert order == ["first", "second", "third"]


def test_pprint(capsys):
    ssc, s = _ctx([[1, 2, 3], [], ["x"]])
    s.pprint(2)
    ssc.run()
    ssc.stop()
    out = capsys.readouterr().out
    dashes = "-" * 43
    blocks = out.split(dashes + "\nTime: ")
    assert blocks[0] == ""
    assert len(blocks) == 4
    first, second, third = blocks[1:]
    assert first.startswith("1970-01-01 00:00:01")
    assert first.split("\n")[1:] == [dashes, "1", "2", "...", "", ""]
    assert second.startswith("1970-01-01 00:00:02")
    assert second.split("\n")[1:] == [dashes, "", ""]
    assert third.split("\n")[1:] == [dashes, "x", "", ""]


def test_pprint_default_shows_ten(capsys):
    ssc, s = _ctx([list(range(11)), list(range(10))])
    s.pprint()
    ssc.run()
    ssc.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines.count("...") == 1
    assert [ln for ln in lines if ln.isdigit()] == [str(i) for i in range(10)] * 2


def test_save_as_text_files(tmp_path):
    ssc, s = _ctx([[1, 2, 3], [], ["x"]])
    s.repartition(2).save_as_text_files(str(tmp_path / "out"), "txt")
    s.save_as_text_files(str(tmp_path / "plain"))
    ssc.run()
    ssc.stop()
    assert sorted(os.listdir(tmp_path)) == [
        "out-1000.txt",
        "out-2000.txt",
        "out-3000.txt",
        "plain-1000",
        "plain-2000",
        "plain-3000",
    ]

    def read(d):
        return {n: (tmp_path / d / n).read_text() for n in sorted(os.listdir(tmp_path / d))}

    assert read("out-1000.txt") == {"_SUCCESS": "", "part-00000": "1\n3\n", "part-00001": "2\n"}
    assert read("out-2000.txt") == {"_SUCCESS": "", "part-00000": "", "part-00001": ""}
    assert read("out-3000.txt") == {"_SUCCESS": "", "part-00000": "x\n", "part-00001": ""}
    assert read("plain-1000") == {"_SUCCESS": "", "part-00000": "1\n2\n3\n"}
    assert read("plain-3000") == {"_SUCCESS": "", "part-00000": "x\n"}


def test_save_as_text_files_of_a_window_uses_window_times(tmp_path):
    ssc, s = _ctx([[1], [2], [3]])
    s.window(2, 2, name="w").save_as_text_files(str(tmp_path / "w"))
    ssc.run()
    ssc.stop()
    assert sorted(os.listdir(tmp_path)) == ["w-2000", "w-4000"]
    # the window's partitions are its batches' partitions
    assert sorted(os.listdir(tmp_path / "w-2000")) == ["_SUCCESS", "part-00000", "part-00001"]
    assert (tmp_path / "w-2000" / "part-00000").read_text() == "1\n"
    assert (tmp_path / "w-2000" / "part-00001").read_text() == "2\n"
    assert (tmp_path / "w-4000" / "part-00000").read_text() == "3\n"


def test_write_to_sink_gets_batch_times():
    ssc, s = _ctx([[1], [2, 3]])
    sink = ListSink("out")
    s.map(lambda x: -x).write_to(sink)
    ssc.run()
    ssc.stop()
    assert sink.batches == [(1000, [-1]), (2000, [-2, -3])]
    assert sink.records() == [-1, -2, -3]


# -- state changed in place, outputs that must not change after their batch (issue 10.7, 10.8) ----


def _append_state(key, value, state):
    """Keeps every value of a key in a list changed in place (no state.update() after the first)."""
    if not state.exists():
        state.update([])
    state.get().append(value)
    return (key, state.get())


def _rate_job(url, sink, snapshots, *, timeout=None):
    import streamkeep as sk

    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100)
        m = ssc.rate_stream(2, name="r").map(lambda r: (r[0] % 2, r[0])).map_with_state(_append_state, name="m", timeout=timeout)
        m.write_to(sink)
        m.state_snapshots().write_to(snapshots)
        return ssc

    return build


@pytest.mark.parametrize("timeout", [None, 60])
def test_map_with_state_changed_in_place_survives_a_restart(tmp_path, timeout):
    """state.get().append(v) without state.update() reaches the checkpoint: a restart equals an uninterrupted run."""
    import streamkeep as sk

    whole, whole_snaps = ListSink("out"), ListSink("snaps")
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "a"), _rate_job(str(tmp_path / "a"), whole, whole_snaps, timeout=timeout))
    ssc.run(4)
    ssc.stop()

    url = str(tmp_path / "b")
    first, first_snaps = ListSink("out"), ListSink("snaps")
    ssc = sk.StreamingContext.get_or_create(url, _rate_job(url, first, first_snaps, timeout=timeout))
    ssc.run(2)
    ssc.stop()
    second, second_snaps = ListSink("out"), ListSink("snaps")
    ssc = sk.StreamingContext.get_or_create(url, _rate_job(url, second, second_snaps, timeout=timeout))
    assert ssc.restored
    ssc.run(2)
    ssc.stop()
    assert first.batches + second.batches == whole.batches
    assert first_snaps.batches + second_snaps.batches == whole_snaps.batches
    assert sorted(second_snaps.batches[-1][1]) == [(0, [0, 2, 4, 6]), (1, [1, 3, 5, 7])]


def test_update_state_by_key_outputs_do_not_change_after_their_batch():
    """update_state_by_key hands out its state each batch; a later in-place change must not reach earlier outputs."""

    def collect(values, old):
        old = [] if old is None else old
        old.extend(values)  # in place, returned as is
        return old

    out = run_batches(lambda ssc, s: s.update_state_by_key(collect, name="u"), [[("k", 1)], [("k", 2)], [("k", 3)]])
    assert out == [[("k", [1])], [("k", [1, 2])], [("k", [1, 2, 3])]]


def test_update_state_by_key_nested_state_outputs_are_detached():
    def collect(values, old):
        old = {"seen": [], "n": 0} if old is None else old
        old["seen"].extend(values)
        old["n"] += len(values)
        return old

    out = run_batches(lambda ssc, s: s.update_state_by_key(collect, name="u"), [[("k", "a")], [("k", "b")]])
    assert out == [[("k", {"seen": ["a"], "n": 1})], [("k", {"seen": ["a", "b"], "n": 2})]]


def test_update_state_by_key_tuple_state_with_a_list_deep_inside_is_detached():
    # A tuple is only safe to share when nothing inside it, however deep, can change in place.
    def collect(values, old):
        if old is None:
            return (0, ("seen", [*values]))
        old[1][1].extend(values)  # in place, two tuple levels down
        return (old[0] + 1, old[1])

    out = run_batches(lambda ssc, s: s.update_state_by_key(collect, name="u"), [[("k", "a")], [("k", "b")], [("k", "c")]])
    assert out == [[("k", (0, ("seen", ["a"])))], [("k", (1, ("seen", ["a", "b"])))], [("k", (2, ("seen", ["a", "b", "c"])))]]


def test_map_with_state_outputs_and_snapshots_do_not_change_after_their_batch():
    inp = [[("k", 1)], [("k", 2)], [("k", 3)]]
    assert run_batches(lambda ssc, s: s.map_with_state(_append_state, name="m"), inp) == [
        [("k", [1])],
        [("k", [1, 2])],
        [("k", [1, 2, 3])],
    ]
    assert run_batches(lambda ssc, s: s.map_with_state(_append_state, name="m").state_snapshots(), inp) == [
        [("k", [1])],
        [("k", [1, 2])],
        [("k", [1, 2, 3])],
    ]


def test_map_with_state_initial_state_is_not_the_callers_object():
    initial = [("k", [0])]
    run_batches(lambda ssc, s: s.map_with_state(_append_state, name="m", initial=initial), [[("k", 1)]])
    assert initial == [("k", [0])]


def test_reduce_by_key_and_window_with_an_in_place_reducer_keeps_earlier_outputs():
    def extend(a, b):
        a.extend(b)  # in place: allowed for reduce functions, as in Spark
        return a

    inp = [[("k", [1])], [("k", [2])], [("k", [3])]]
    out = run_batches(lambda ssc, s: s.reduce_by_key_and_window(extend, 2, name="w"), inp)
    assert out == [[("k", [1])], [("k", [1, 2])], [("k", [2, 3])], [("k", [3])]]


# -- records that are not (key, value) pairs (issue 10.14) ----------------------------


@pytest.mark.parametrize(
    "keyed",
    [
        lambda s: s.reduce_by_key(add),
        lambda s: s.group_by_key(),
        lambda s: s.combine_by_key(lambda v: v, add, add),
        lambda s: s.update_state_by_key(lambda vs, old: 1, name="u"),
        lambda s: s.map_with_state(lambda k, v, st: v, name="m"),
        lambda s: s.map_values(str.upper),
        lambda s: s.flat_map_values(list),
        lambda s: s.join(s),
        lambda s: s.reduce_by_key_and_window(add, 2, name="w"),
    ],
)
def test_two_character_strings_are_not_unpacked_as_pairs(keyed):
    with pytest.raises(UserFunctionError, match=r"\(key, value\) pairs expected, got 'ab' \(str\) from operator 'map'") as info:
        run_batches(lambda ssc, s: keyed(s.map(str.strip)), [[" ab "]])
    assert "user function" not in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize(
    "keyed",
    [
        lambda s: s.reduce_by_key(add),
        lambda s: s.group_by_key(),
        lambda s: s.combine_by_key(lambda v: v, add, add),
        lambda s: s.update_state_by_key(lambda vs, old: vs, name="u"),
        lambda s: s.map_with_state(lambda k, v, st: v, name="m"),
        lambda s: s.map_values(str.upper),
        lambda s: s.flat_map_values(list),
        lambda s: s.join(s),
        lambda s: s.reduce_by_key_and_window(add, 2, name="w"),
    ],
)
@pytest.mark.parametrize("record", [("k", "a", "b"), ("k",)])
def test_tuples_of_the_wrong_length_are_not_pairs(keyed, record):
    """Issue 10.14 sibling: a 3-tuple was unpacked with a ValueError blamed on a user function (or, into
    update_state_by_key, silently lost its third element); a 1-tuple raised IndexError."""
    with pytest.raises(UserFunctionError, match=r"\(key, value\) pairs expected, got \(.*\) \(tuple\) from operator 'map'") as info:
        run_batches(lambda ssc, s: keyed(s.map(lambda r: record)), [["x"]])
    assert "user function" not in str(info.value)


@pytest.mark.parametrize("op", ["join", "left_outer_join", "right_outer_join", "full_outer_join", "cogroup"])
def test_non_pairs_into_a_join_name_the_join(op):
    """The error names the operator the user called, not "cogroup" (which joins are built on)."""
    with pytest.raises(UserFunctionError, match=rf"^{op}: \(key, value\) pairs expected, got 'ab' \(str\)"):
        run_batches(lambda ssc, s: getattr(s, op)(s.map(lambda r: ("k", r))), [["ab"]])


def test_non_pairs_from_a_source_name_the_source():
    with pytest.raises(UserFunctionError, match=r"reduce_by_key: \(key, value\) pairs expected, got 'abc' \(str\) from source 'input'"):
        run_batches(lambda ssc, s: s.reduce_by_key(add), [["abc"]])


def test_non_pairs_after_a_stateful_operator_name_it():
    with pytest.raises(UserFunctionError, match=r"got 7 \(int\) from map_with_state 'm'"):
        run_batches(lambda ssc, s: s.map_with_state(lambda k, v, st: v, name="m").reduce_by_key(add), [[("k", 7)]])


def test_two_element_lists_are_pairs():
    assert run_batches(lambda ssc, s: s.map(lambda w: [w, 1]).reduce_by_key(add), [["a", "a"]]) == [[("a", 2)]]


def test_unhashable_keys_name_the_operator_that_made_them():
    with pytest.raises(UserFunctionError, match=r"reduce_by_key: the key \['a'\] \(list\) of a record from operator 'map' is not hashable"):
        run_batches(lambda ssc, s: s.map(lambda w: ([w], 1)).reduce_by_key(add), [["a"]])
    with pytest.raises(UserFunctionError, match=r"the key \['a'\] \(list\) of a record from operator 'map' is not hashable"):
        run_batches(lambda ssc, s: s.map(lambda w: ([w], 1)).update_state_by_key(lambda vs, old: 1, name="u"), [["a"]])


def test_a_type_error_of_the_reduce_function_still_blames_it():
    with pytest.raises(UserFunctionError, match="user function in operator 'reduce_by_key' raised TypeError") as info:
        run_batches(lambda ssc, s: s.map(lambda w: ("k", 1 if w == "a" else "x")).reduce_by_key(lambda a, b: a + b), [["a", "b"]])
    assert info.value.operator == "reduce_by_key"


def test_user_function_error_shows_the_failing_record_truncated():
    with pytest.raises(UserFunctionError) as info:
        run_batches(lambda ssc, s: s.map(lambda r: r["missing"]), [[{"id": 1, "payload": "x" * 500}]])
    msg = str(info.value)
    assert "for record {'id': 1, 'payload': 'xxx" in msg
    assert "x" * 200 not in msg
    with pytest.raises(UserFunctionError, match=r"for key 'k', value 0"):
        run_batches(lambda ssc, s: s.map_with_state(lambda k, v, st: 1 // v, name="m"), [[("k", 0)]])


# -- on_error: dead letters (issue 10.13) ---------------------------------------------


def _inverse(x):
    return 10 // x


def test_a_poison_record_fails_the_batch_by_default():
    with pytest.raises(UserFunctionError, match="for record 0"):
        run_batches(lambda ssc, s: s.map(_inverse), [[1, 0, 2]])


def test_dead_letter_sink_gets_the_failing_records_and_the_batch_goes_on():
    dead = ListSink("dead")
    out = run_batches(lambda ssc, s: s.map(_inverse, on_error=dead).filter(lambda y: y > 2, on_error=dead), [[1, 0, 2, "x"], [], [0, 5]])
    assert out == [[10, 5], [], []]
    assert [t for t, _ in dead.batches] == [1000, 3000]  # nothing written for a batch without failures
    first = dead.batches[0][1]
    assert [(d["operator"], d["batch_time_ms"], d["record"]) for d in first] == [("map", 1000, 0), ("map", 1000, "x")]
    assert first[0]["error"].startswith("ZeroDivisionError: ")
    assert first[1]["error"].startswith("TypeError: ")
    assert [d["record"] for d in dead.batches[1][1]] == [0]


def test_dead_letters_per_operator_and_later_operators_keep_failing():
    dead = ListSink("dead")
    with pytest.raises(UserFunctionError, match="for record 5"):
        run_batches(lambda ssc, s: s.map(_inverse, on_error=dead).map(lambda y: 1 // (y - 5)), [[2, 0]])


def test_the_context_on_error_is_the_default_of_per_record_operators():
    import streamkeep as sk

    dead = ListSink("dead")
    out = ListSink("out")
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), on_error=dead)
    s = ssc.queue_stream([[("a", 1), ("b", 0), ("c", 2)]], name="q")
    s.map_values(_inverse).flat_map(lambda kv: [kv] * (kv[1] // 5)).map(lambda kv: kv, on_error="fail").write_to(out)
    ssc.run()
    ssc.stop()
    assert out.records() == [("a", 10), ("a", 10), ("c", 5)]
    assert [(d["operator"], d["record"]) for d in dead.records()] == [("map_values", ("b", 0))]


def test_map_with_state_dead_letters_skip_the_record_and_keep_the_state():
    dead = ListSink("dead")

    def total(key, value, state):
        new = state.get_option(0) + 100 // value
        state.update(new)
        return (key, new)

    inp = [[("k", 1), ("k", 0), ("k", 2)], [("k", 0), ("j", 4)]]
    out = run_batches(lambda ssc, s: s.map_with_state(total, name="m", on_error=dead), inp)
    assert out == [[("k", 100), ("k", 150)], [("j", 25)]]
    assert [(d["operator"], d["batch_time_ms"], d["record"]) for d in dead.records()] == [("m", 1000, ("k", 0)), ("m", 2000, ("k", 0))]


def test_dead_letters_with_the_process_executor():
    import streamkeep as sk

    dead, out = ListSink("dead"), ListSink("out")
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=sk.executors.LocalExecutor(processes=2))
    ssc.queue_stream([list(range(-3, 3))], name="q").map(_inverse, on_error=dead).write_to(out)
    try:
        ssc.run()
    finally:
        ssc.stop()
    assert out.records() == [10 // x for x in range(-3, 3) if x]
    assert [d["record"] for d in dead.records()] == [0]


def test_dead_letters_are_written_once_per_batch_time_across_a_restart(tmp_path):
    """A dead-letter sink is a sink: replays after a restart write the same batch times, never twice more."""
    import streamkeep as sk

    class CountingSink(ListSink):
        def __init__(self, name):
            super().__init__(name)
            self.writes = []

        def write(self, batch_time, records):
            self.writes.append(batch_time)
            super().write(batch_time, records)

    url = str(tmp_path / "ckpt")

    def build(dead, out):
        def setup():
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), on_error=dead)
            ssc.rate_stream(3, name="r").map(lambda r: 10 // (r[0] % 4)).write_to(out)
            return ssc

        return setup

    dead1, out1 = CountingSink("dead"), ListSink("out")
    ssc = sk.StreamingContext.get_or_create(url, build(dead1, out1))
    ssc.run(2)
    ssc.stop()
    dead2, out2 = CountingSink("dead"), ListSink("out")
    ssc = sk.StreamingContext.get_or_create(url, build(dead2, out2))
    ssc.run(2)
    ssc.stop()
    assert dead1.writes == [1000, 2000] and dead2.writes == [3000]  # records 0..11: 0, 4 and 8 fail
    assert [d["record"][0] for d in dead1.records() + dead2.records()] == [0, 4, 8]
    assert [t for t, _ in out1.batches + out2.batches] == [1000, 2000, 3000, 4000]


@pytest.mark.parametrize("bad", ["skip", "ignore", 3, print])
def test_on_error_must_be_fail_or_a_sink(bad):
    import streamkeep as sk
    from streamkeep import ConfigError

    with pytest.raises(ConfigError, match="on_error must be 'fail'"):
        sk.StreamingContext(1.0, on_error=bad)
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match="map: on_error must be 'fail'"):
        ssc.queue_stream([], name="q").map(lambda x: x, on_error=bad)


def test_a_dead_letter_sink_is_not_also_an_output():
    import streamkeep as sk
    from streamkeep import ConfigError

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([], name="q")
    sink = ListSink("dead")
    s.map(lambda x: x, on_error=sink).filter(bool, on_error=sink)  # one dead-letter sink for several operators
    with pytest.raises(ConfigError, match="already an output"):
        s.write_to(sink)
    with pytest.raises(ConfigError, match="sink named 'dead'"):
        s.write_to(ListSink("dead"))


def test_inverse_window_filter_drops_a_key_whose_first_slice_sums_to_zero() -> None:
    """A key whose values cancel out within its first batch enters the running window at 0: filter_f
    must drop it like any other key it rejects (found by scripts/mutate.py: new keys were not checked)."""
    import operator as op

    from streamkeep.testing import run_batches

    out = run_batches(
        lambda ssc, s: s.reduce_by_key_and_window(op.add, 2.0, 1.0, inv_f=op.sub, filter_f=lambda kv: kv[1] != 0, name="w"),
        [[("a", 1), ("a", -1), ("b", 2)], [("b", 1)]],
        num_batches=2,
        sort=True,
    )
    assert out == [[("b", 2)], [("b", 3)]]


# -- tuple states: shared not copied, deltas packed natively (issue 14.3) ----------------------


def _tuple_or_list_state(values, old):
    """Key "p" keeps a plain tuple state; key "l" switches to a tuple holding a list and then grows it in place."""
    if not values:
        return old
    key, n = values[0]
    if old is None:
        return (n, ("first", 1.5, None, b"x", True))
    if key == "l":
        if isinstance(old[1], list):
            old[1].append(n)  # in place, the same tuple returned
            return old
        return (old[0] + n, [n])
    return (old[0] + n, ("seen", (n, "deep")))


def _tuple_job(url):
    import streamkeep as sk

    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100)
        batches = [[("p", ("p", 1)), ("l", ("l", 1))], [("p", ("p", 2)), ("l", ("l", 2))], [("l", ("l", 3))], [("p", ("p", 4)), ("l", ("l", 4))]]
        ssc.queue_stream(batches, name="q").update_state_by_key(_tuple_or_list_state, name="u").write_to(ListSink("out"))
        return ssc

    return build


def test_update_state_by_key_tuple_states_restart_exactly(tmp_path):
    """Tuple states go to deltas as natively packed segments; a restart gives back the same values and types."""
    from _strict import same

    import streamkeep as sk
    from streamkeep.testing import state_of

    whole = sk.StreamingContext.get_or_create(str(tmp_path / "a"), _tuple_job(str(tmp_path / "a")))
    whole.run(4)
    expected = dict(state_of(whole, "u")["set"])
    whole.stop()
    assert same(expected, {"p": (7, ("seen", (4, "deep"))), "l": (3, [2, 3, 4])})

    url = str(tmp_path / "b")
    for runs in (2, 1, 1):  # every batch of the chain written by another run
        ssc = sk.StreamingContext.get_or_create(url, _tuple_job(url))
        ssc.run(runs)
        got = dict(state_of(ssc, "u")["set"])
        ssc.stop()
    assert same(sorted(got.items()), sorted(expected.items())), (got, expected)  # key order may differ after a restart


def test_update_state_by_key_hands_its_delta_over_plain_pairs_first():
    from streamkeep.codec._items import PlainFirstPairs
    from streamkeep.dstream._graph import UpdateStateNode
    from streamkeep.executors._runtime import UpdateStateRuntime

    node = UpdateStateNode(
        id=1, op="update_state_by_key", parents=(), slide_ms=1000, name="u", codec="msgpack", update=_tuple_or_list_state, initial=(), num_partitions=None
    )
    rt = UpdateStateRuntime(node)
    rt.step(1000, Batch([[("p", ("p", 1)), ("l", ("l", 1)), (("t", 1), ("x", 1))]], 1000))
    first = rt.delta()
    assert first is not None
    assert type(first["set"]) is PlainFirstPairs
    assert first["set"].known_plain == 3  # every key and value is tuples and scalars
    out = rt.step(2000, Batch([[("l", ("l", 2)), (("t", 1), ("x", 2))]], 2000))
    second = rt.delta()
    assert second is not None
    # "l" now holds a list: it is not among the pairs promised plain (the pairs keep the state's key order,
    # which a restore follows: "l" comes first here, so none is promised)
    assert [k for k, _ in second["set"]] == ["l", ("t", 1)]
    assert getattr(second["set"], "known_plain", 0) == 0
    assert dict(second["set"])["l"] == (3, [2])
    assert out is not None
    rt.step(3000, Batch([[("l", ("l", 3))]], 3000))  # in place: the earlier output must not change
    assert dict(out.partitions[0])["l"] == (3, [2])
    third = rt.delta()
    assert third is not None
    assert type(third["set"]) is list  # nothing changed is plain
    assert third["set"] == [("l", (3, [2, 3]))]
    assert type(rt.snapshot()["set"]) is list  # "l" is not plain
    rt.step(4000, Batch([[("l", ("x", 0))]], 4000))
    rt.delta()
    snap = rt.snapshot()["set"]  # every key plain again: the sizer's and copied snapshots' encoder need not look
    assert type(snap) is PlainFirstPairs and snap.known_plain == 3
    assert dict(snap) == {"p": (1, ("first", 1.5, None, b"x", True)), "l": (3, ("seen", (0, "deep"))), ("t", 1): (3, ("seen", (2, "deep")))}

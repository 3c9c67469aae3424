"""Golden tests for `Batch`, the per-batch partitioned collection (the RDD analogue).

Expected values are computed by hand. Per-key results whose order is not defined
are compared sorted; partition layouts are compared where the API defines them.
"""

from __future__ import annotations

import operator

import pytest

from streamkeep import Batch, UserFunctionError
from streamkeep.errors import ConfigError

add = operator.add


def kv_batch() -> Batch[tuple[str, int]]:
    """Two partitions; key 'a' spans both."""
    return Batch([[("a", 1), ("b", 2)], [("a", 3), ("c", 4)]], 7000)


def right_batch() -> Batch[tuple[str, str]]:
    return Batch([[("a", "x"), ("d", "y")], [("a", "z")]], 7000)


# -- actions -----------------------------------------------------------------


def test_collect_in_partition_order():
    b = Batch([[1, 2], [3], [], [4, 5]])
    assert b.collect() == [1, 2, 3, 4, 5]
    assert list(b) == [1, 2, 3, 4, 5]


def test_count_and_len():
    b = Batch([[1, 2], [3], []])
    assert b.count() == 3
    assert len(b) == 3
    assert Batch([[], []]).count() == 0


def test_take_spans_partitions_and_stops_early():
    seen = []

    def f(x):
        seen.append(x)
        return x

    b = Batch([[1, 2], [3, 4], [5, 6]]).map(f)
    assert b.take(3) == [1, 2, 3]
    assert 5 not in seen and 6 not in seen  # the third partition was never consumed
    assert Batch([[1], [2]]).take(0) == []
    assert Batch([[1], [2]]).take(10) == [1, 2]
    assert Batch([[1, 2], [3]]).cache().take(2) == [1, 2]


def test_first():
    assert Batch([[], [7, 8]]).first() == 7
    with pytest.raises(ValueError, match="empty"):
        Batch([[], []]).first()


def test_is_empty():
    assert Batch([[], []]).is_empty()
    assert Batch.empty().is_empty()
    assert not Batch([[], [0]]).is_empty()
    assert Batch([[1, 2]]).filter(lambda x: x > 5).is_empty()


def test_foreach_and_foreach_partition():
    seen = []
    Batch([[1, 2], [3]]).foreach(seen.append)
    assert seen == [1, 2, 3]
    parts = []
    Batch([[1, 2], [], [3]]).foreach_partition(lambda it: parts.append(list(it)))
    assert parts == [[1, 2], [], [3]]


def test_glom_and_num_partitions():
    b = Batch([[1, 2], [], [3]])
    assert b.num_partitions == 3
    assert b.glom().collect() == [[1, 2], [], [3]]
    assert b.map(lambda x: x * 10).glom().collect() == [[10, 20], [], [30]]
    assert Batch.empty().num_partitions == 1


# -- per-record operators ------------------------------------------------------


def test_map_filter_flat_map_keep_partitions():
    b = Batch([[1, 2], [3, 4]])
    assert b.map(lambda x: x * 2).glom().collect() == [[2, 4], [6, 8]]
    assert b.filter(lambda x: x % 2).glom().collect() == [[1], [3]]
    assert b.flat_map(lambda x: [x] * (x % 3)).glom().collect() == [[1, 2, 2], [4]]
    assert b.flat_map(lambda x: ()).collect() == []


def test_map_partitions_sees_each_partition_once():
    b = Batch([[1, 2], [3], []])
    assert b.map_partitions(lambda it: [sum(it)]).glom().collect() == [[3], [3], [0]]
    assert b.map_partitions(lambda it: (x + 1 for x in it)).collect() == [2, 3, 4]


def test_map_values_and_flat_map_values():
    b = kv_batch()
    assert b.map_values(lambda v: v * 10).collect() == [("a", 10), ("b", 20), ("a", 30), ("c", 40)]
    assert b.flat_map_values(lambda v: range(v % 3)).collect() == [("a", 0), ("b", 0), ("b", 1), ("c", 0)]


def test_chained_narrow_operators():
    b = Batch([["a b", "c"], ["a"]])
    out = b.flat_map(str.split).map(lambda w: (w, 1)).filter(lambda kv: kv[0] != "c").map_values(lambda v: v + 1)
    assert out.glom().collect() == [[("a", 2), ("b", 2)], [("a", 2)]]


# -- fused laziness ----------------------------------------------------------


def test_narrow_operators_are_lazy():
    calls = []
    b = Batch([[1, 2], [3]]).map(lambda x: calls.append(x) or x).filter(lambda x: calls.append(-x) or True)
    assert calls == []
    assert b.collect() == [1, 2, 3]
    # fused: each record goes through map then filter before the next record
    assert calls == [1, -1, 2, -2, 3, -3]


def test_user_function_runs_once_per_record_after_cache():
    calls = []

    def f(x):
        calls.append(x)
        return x * 2

    b = Batch([[1, 2], [3]]).map(f).cache()
    assert calls == [1, 2, 3]
    assert b.collect() == [2, 4, 6]
    assert b.count() == 3
    assert b.take(2) == [2, 4]
    b.foreach(lambda x: None)
    assert b.reduce(add).collect() == [12]
    assert b.map(lambda x: x + 1).collect() == [3, 5, 7]
    assert calls == [1, 2, 3]


def test_consuming_twice_does_not_rerun_functions():
    calls = []
    b = Batch([[1, 2], [3]]).map(lambda x: calls.append(x) or x)
    assert b.collect() == [1, 2, 3]
    assert b.collect() == [1, 2, 3]
    assert b.count() == 3
    assert calls == [1, 2, 3]


def test_derived_batches_share_a_cached_parent():
    calls = []
    parent = Batch([[1, 2, 3]]).map(lambda x: calls.append(x) or x).cache()
    evens = parent.filter(lambda x: x % 2 == 0)
    odds = parent.filter(lambda x: x % 2)
    assert evens.collect() == [2]
    assert odds.collect() == [1, 3]
    assert calls == [1, 2, 3]


# -- per-batch operators -----------------------------------------------------


def test_reduce():
    assert Batch([[1, 2], [3, 4]]).reduce(add).collect() == [10]
    assert Batch([[1], [], [5]]).reduce(max).collect() == [5]
    assert Batch([[], []]).reduce(add).collect() == []
    assert Batch([["x"]]).reduce(add).collect() == ["x"]


def test_count_batch():
    assert Batch([[1, 2], [3]]).count_batch().collect() == [3]
    assert Batch([[]]).count_batch().collect() == [0]


def test_reduce_by_key_across_partitions():
    out = kv_batch().reduce_by_key(add)
    assert sorted(out.collect()) == [("a", 4), ("b", 2), ("c", 4)]
    assert out.num_partitions == 2  # default: the input's partition count
    one = kv_batch().reduce_by_key(add, 1)
    assert one.num_partitions == 1
    assert sorted(one.collect()) == [("a", 4), ("b", 2), ("c", 4)]
    three = kv_batch().reduce_by_key(add, 3)
    assert three.num_partitions == 3
    assert sorted(three.collect()) == [("a", 4), ("b", 2), ("c", 4)]


def test_keyed_results_put_each_key_in_one_partition():
    pairs = [(k % 7, 1) for k in range(50)]
    b = Batch([pairs[:20], pairs[20:35], pairs[35:]])
    for out in (b.reduce_by_key(add, 4), b.group_by_key(4), b.combine_by_key(lambda v: v, add, add, 4)):
        parts = out.glom().collect()
        assert len(parts) == 4
        keys = [[k for k, _ in p] for p in parts]
        flat = [k for p in keys for k in p]
        assert sorted(flat) == list(range(7))  # each key exactly once
    assert dict(b.reduce_by_key(add, 4).collect()) == {k: len([x for x in range(50) if x % 7 == k]) for k in range(7)}


def test_group_by_key_keeps_arrival_order():
    out = kv_batch().group_by_key()
    assert sorted(out.collect()) == [("a", [1, 3]), ("b", [2]), ("c", [4])]


def test_combine_by_key():
    # per-key (sum, count): create the first, merge_value the rest, merge_combiners across partitions
    out = kv_batch().combine_by_key(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1]))
    assert sorted(out.collect()) == [("a", (4, 2)), ("b", (2, 1)), ("c", (4, 1))]
    lists = Batch([[("k", 1), ("k", 2)], [("k", 3)]]).combine_by_key(lambda v: [v], lambda c, v: c + [v], lambda a, b: a + b, 1)
    assert lists.collect() == [("k", [1, 2, 3])]


def test_count_by_value():
    out = Batch([["a", "b"], ["a", "a", "c"]]).count_by_value()
    assert sorted(out.collect()) == [("a", 3), ("b", 1), ("c", 1)]
    assert Batch([[]]).count_by_value().collect() == []


def test_distinct():
    assert sorted(Batch([[1, 2, 2], [3, 1]]).distinct().collect()) == [1, 2, 3]
    assert Batch([[1, 1]]).distinct(1).num_partitions == 1


def test_join_inner_drops_missing_keys_on_either_side():
    out = kv_batch().join(right_batch())
    # 'a' has 2 values left and 2 right: 4 pairs; 'b', 'c' (left only) and 'd' (right only) are dropped
    assert sorted(out.collect()) == [("a", (1, "x")), ("a", (1, "z")), ("a", (3, "x")), ("a", (3, "z"))]


def test_left_outer_join():
    out = kv_batch().left_outer_join(right_batch())
    assert sorted(out.collect(), key=repr) == sorted(
        [("a", (1, "x")), ("a", (1, "z")), ("a", (3, "x")), ("a", (3, "z")), ("b", (2, None)), ("c", (4, None))], key=repr
    )


def test_right_outer_join():
    out = kv_batch().right_outer_join(right_batch())
    assert sorted(out.collect(), key=repr) == sorted(
        [("a", (1, "x")), ("a", (1, "z")), ("a", (3, "x")), ("a", (3, "z")), ("d", (None, "y"))], key=repr
    )


def test_full_outer_join():
    out = kv_batch().full_outer_join(right_batch())
    assert sorted(out.collect(), key=repr) == sorted(
        [
            ("a", (1, "x")),
            ("a", (1, "z")),
            ("a", (3, "x")),
            ("a", (3, "z")),
            ("b", (2, None)),
            ("c", (4, None)),
            ("d", (None, "y")),
        ],
        key=repr,
    )


def test_joins_with_an_empty_side():
    left = Batch([[("a", 1)]])
    empty: Batch[tuple[str, int]] = Batch([[]])
    assert left.join(empty).collect() == []
    assert empty.join(left).collect() == []
    assert left.left_outer_join(empty).collect() == [("a", (1, None))]
    assert left.right_outer_join(empty).collect() == []
    assert empty.right_outer_join(left).collect() == [("a", (None, 1))]
    assert left.full_outer_join(empty).collect() == [("a", (1, None))]
    assert empty.full_outer_join(empty).collect() == []


def test_join_num_partitions():
    out = kv_batch().join(right_batch(), 3)
    assert out.num_partitions == 3
    assert len(out.collect()) == 4


def test_cogroup():
    out = kv_batch().cogroup(right_batch())
    assert sorted(out.collect()) == [
        ("a", ([1, 3], ["x", "z"])),
        ("b", ([2], [])),
        ("c", ([4], [])),
        ("d", ([], ["y"])),
    ]


def test_cogroup_three_batches():
    third = Batch([[("c", True)]])
    out = kv_batch().cogroup(right_batch(), third, num_partitions=1)
    assert out.num_partitions == 1
    assert dict(out.collect())["c"] == ([4], [], [True])
    assert dict(out.collect())["d"] == ([], ["y"], [])


def test_union_concatenates_partitions():
    a = Batch([[1], [2]])
    b = Batch([[3]]).map(lambda x: x * 10)
    c = Batch([[], [4]])
    u = a.union(b, c)
    assert u.num_partitions == 5
    assert u.glom().collect() == [[1], [2], [30], [], [4]]
    assert a.union().collect() == [1, 2]


def test_repartition_round_robin():
    b = Batch([[1, 2, 3], [4, 5]])
    r = b.repartition(2)
    assert r.num_partitions == 2
    assert r.glom().collect() == [[1, 3, 5], [2, 4]]
    assert Batch([[1, 2, 3, 4]]).repartition(3).glom().collect() == [[1, 4], [2], [3]]
    assert Batch([[1, 2], [3]]).repartition(1).glom().collect() == [[1, 2, 3]]
    assert Batch([[]]).repartition(3).glom().collect() == [[], [], []]


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True, None])
def test_repartition_rejects_bad_counts(bad):
    with pytest.raises(ConfigError, match="num_partitions"):
        Batch([[1]]).repartition(bad)


def test_sort_by():
    b = Batch([[3, 1], [2, 5, 4]])
    assert b.sort_by(lambda x: x).collect() == [1, 2, 3, 4, 5]
    assert b.sort_by(lambda x: x, ascending=False).collect() == [5, 4, 3, 2, 1]
    assert b.sort_by(lambda x: -x).num_partitions == 1
    assert b.sort_by(lambda x: x, num_partitions=2).glom().collect() == [[1, 2, 3], [4, 5]]
    assert Batch([[("b", 1), ("a", 2)]]).sort_by_key().collect() == [("a", 2), ("b", 1)]
    assert Batch([[]]).sort_by(lambda x: x).collect() == []


def test_keys_values_cartesian():
    b = kv_batch()
    assert b.keys().collect() == ["a", "b", "a", "c"]
    assert b.values().collect() == [1, 2, 3, 4]
    assert Batch([[1], [2]]).cartesian(Batch([["x", "y"]])).collect() == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]


def test_per_batch_results_keep_the_batch_time():
    b = kv_batch()
    for out in (b.reduce_by_key(add), b.join(right_batch()), b.map(lambda kv: kv).union(b), b.repartition(3), b.reduce(add)):
        assert out.batch_time_ms == 7000


# -- user function errors ----------------------------------------------------


def _boom(x):
    if x == 3:
        raise KeyError("bad record")
    return x


def test_user_error_names_the_failing_fused_operator():
    b = Batch([[1, 2], [3]], 42_000).map(lambda x: x).filter(_boom).map(str)
    with pytest.raises(UserFunctionError) as info:
        b.collect()
    err = info.value
    assert err.operator == "filter"
    assert err.batch_time_ms == 42_000
    assert isinstance(err.__cause__, KeyError)
    assert "filter" in str(err) and "42000" in str(err) and "KeyError" in str(err)
    assert "partition 1" in str(err)


@pytest.mark.parametrize(
    ("op", "run"),
    [
        ("map", lambda b: b.map(_boom).collect()),
        ("flat_map", lambda b: b.flat_map(lambda x: [_boom(x)]).collect()),
        ("map_partitions", lambda b: b.map_partitions(lambda it: [_boom(x) for x in it]).collect()),
        ("map_values", lambda b: b.map(lambda x: (x, x)).map_values(_boom).collect()),
        ("flat_map_values", lambda b: b.map(lambda x: (x, x)).flat_map_values(lambda v: [_boom(v)]).collect()),
        ("reduce", lambda b: b.reduce(lambda a, c: _boom(c)).collect()),
        ("reduce_by_key", lambda b: b.map(lambda x: (0, x)).reduce_by_key(lambda a, c: _boom(c), 1).collect()),
        ("foreach", lambda b: b.foreach(_boom)),
        ("foreach_partition", lambda b: b.foreach_partition(lambda it: [_boom(x) for x in it])),
        ("map", lambda b: b.map(_boom).count()),
        ("map", lambda b: b.map(_boom).take(5)),
        ("map", lambda b: b.map(lambda x: (x, _boom(x))).group_by_key()),
        # reduce_by_key calls a trailing map's function itself (Batch._consume_mapped): still the map's error
        ("map", lambda b: b.map(lambda x: (x, _boom(x))).reduce_by_key(operator.add)),
        ("map", lambda b: b.map(lambda x: (x, _boom(x))).reduce_by_key(max)),
    ],
)
def test_user_error_per_operator(op, run):
    b = Batch([[1, 2], [3]], 5000)
    with pytest.raises(UserFunctionError) as info:
        run(b)
    assert info.value.operator == op
    assert info.value.batch_time_ms == 5000
    assert isinstance(info.value.__cause__, KeyError)


def test_records_that_are_not_pairs_name_the_keyed_operator():
    b = Batch([[1, 2]], 3000).map(lambda x: x)
    with pytest.raises(UserFunctionError) as info:
        b.group_by_key()
    assert info.value.operator == "group_by_key"
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(UserFunctionError) as info:
        b.reduce_by_key(add)
    assert "reduce_by_key" in info.value.operator
    assert isinstance(info.value.__cause__, TypeError)


def test_user_error_in_cross_partition_merge():
    b = Batch([[("k", 1)], [("k", 0)]], 9000)
    with pytest.raises(UserFunctionError) as info:
        b.reduce_by_key(lambda a, c: a // c, 1).collect()
    assert info.value.operator == "reduce_by_key"
    assert info.value.batch_time_ms == 9000
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_user_error_in_sort_key():
    with pytest.raises(UserFunctionError) as info:
        Batch([[1, "x"]], 1000).sort_by(lambda x: x + 1)
    assert isinstance(info.value.__cause__, TypeError)
    assert info.value.batch_time_ms == 1000


def test_reduce_by_key_with_operator_add_matches_any_other_add_function():
    """reduce_by_key(operator.add) runs an inlined `old + v` loop: same results and errors as a Python add function."""
    records = [("a", 1), ["b", 2], ("a", 3), ("s", "x"), ["s", "y"], ("l", [1]), ("l", [2]), ("a", 0.5)]
    fast = Batch([records, [("a", 10)]], 1000).map(lambda r: r).reduce_by_key(add)
    slow = Batch([records, [("a", 10)]], 1000).map(lambda r: r).reduce_by_key(lambda x, y: x + y)
    assert sorted(fast.collect(), key=str) == sorted(slow.collect(), key=str) == [("a", 14.5), ("b", 2), ("l", [1, 2]), ("s", "xy")]
    for f in (add, lambda x, y: x + y):
        with pytest.raises(UserFunctionError) as info:
            Batch([[("k", 1), ("k", "one")]], 2000).map(lambda r: r).reduce_by_key(f)
        assert "reduce_by_key" in info.value.operator
        assert info.value.batch_time_ms == 2000
        assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize("f", [operator.add, lambda a, c: a + c])
def test_reduce_by_key_applies_a_trailing_map_itself_with_the_same_result(f):
    """reduce_by_key calls the function of a map right before it from its own loop (no builtin map per record)."""
    b = Batch([["a b a", "c"], ["b", "", "a a"]], 1000).flat_map(str.split)
    assert sorted(b.map(lambda w: (w, 1)).reduce_by_key(f).collect()) == [("a", 4), ("b", 2), ("c", 1)]
    assert sorted(b.map(lambda w: [w, 2]).reduce_by_key(f, 2).collect()) == [("a", 8), ("b", 4), ("c", 2)]
    cached = b.map(lambda w: (w, 1)).cache()  # materialised: the records are already mapped
    assert sorted(cached.reduce_by_key(f).collect()) == [("a", 4), ("b", 2), ("c", 1)]

"""One helper per repeated meaning (issue 11.7): partition counts and user-function errors."""

from __future__ import annotations

import pytest

import streamkeep as sk
from streamkeep._util import check_partitions, user_function_error
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

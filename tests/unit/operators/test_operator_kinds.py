"""One registry per stateful operator kind (issue 11.3): runtimes, the compatibility check and the CLI read it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamkeep.dstream._graph import StatefulNode, WindowNode
from streamkeep.errors import CheckpointError
from streamkeep.executors._runtime import UpdateStateRuntime, WindowRuntime
from streamkeep.executors.kinds import KINDS, OperatorKind, make_runtime, node_from_description, register, shape_keys
from streamkeep.scheduler._compat import differences


@dataclass(frozen=True, eq=False, kw_only=True)
class _SessionNode(StatefulNode):
    gap_ms: int

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gap_ms": self.gap_ms}


@pytest.fixture
def session_kind() -> Iterator[OperatorKind]:
    k = register(OperatorKind("session", _SessionNode, lambda n, _z: UpdateStateRuntime(n), ("gap_ms",), lambda c, d: _SessionNode(**c, gap_ms=int(d["gap_ms"]))))
    try:
        yield k
    finally:
        del KINDS["session"]


def test_the_builtin_kinds_and_their_shape() -> None:
    assert list(KINDS) == [
        "window", "reduce_by_key_and_window", "update_state_by_key", "map_with_state", "event_window_reduce", "event_window_count",
        "aggregate_state", "aggregate_window",
    ]
    assert shape_keys() == (
        "kind", "length_ms", "slide_ms", "parent_slide_ms", "inverse", "timeout", "window", "size_ms", "window_slide_ms", "gap_ms", "max_delay_ms"
    )


def test_a_node_rebuilt_from_its_description_gets_its_runtime() -> None:
    node = node_from_description("w", {"kind": "window", "codec": "msgpack", "length_ms": 3000, "slide_ms": 1000}, 1000)
    assert isinstance(node, WindowNode) and node.length_ms == 3000 and node.name == "w"
    assert isinstance(make_runtime(node, 0), WindowRuntime)
    assert node_from_description("x", {"kind": "from_the_future"}, 1000) is None


def test_one_registration_adds_a_kind_everywhere(session_kind: OperatorKind) -> None:
    node = node_from_description("s", {"kind": "session", "codec": "msgpack", "gap_ms": 5000}, 1000)
    assert isinstance(node, _SessionNode)
    assert isinstance(make_runtime(node, 0), UpdateStateRuntime)
    assert "gap_ms" in shape_keys()
    d = differences({"operators": {"s": {"kind": "session", "gap_ms": 5000}}}, {"operators": {"s": {"kind": "session", "gap_ms": 6000}}})
    assert d["incompatible"] == [("s", "gap_ms 5000 -> 6000")]


def test_an_unregistered_kind_says_how_to_register_it() -> None:
    node = _SessionNode(id=1, op="session", parents=(), slide_ms=1000, name="s", codec="msgpack", gap_ms=1)
    with pytest.raises(CheckpointError, match=r"not registered \(streamkeep\.executors\.kinds\.register\)"):
        make_runtime(node, 0)

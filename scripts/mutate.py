#!/usr/bin/env python3
"""Mutation testing of the code that guards exactness (run on demand, not in CI).

For each target function the script makes small AST mutants, one at a time:
comparison flips (``>=`` -> ``>``, ``==`` -> ``!=``, ...), ``and`` <-> ``or``,
``not x`` -> ``x``, an ``if`` condition forced to True/False, an integer
constant +1, a call statement removed, a ``return``'s value replaced by None,
and ``raise`` removed. Each mutant is written into a scratch copy of the repo
and the target's tests run there (``pytest -x``); a mutant no test fails is a
*survivor*: either a missing test or an equivalent mutant. Survivors are
listed with their line and change, for docs/testing.md.

Usage::

    .venv/bin/python scripts/mutate.py                 # every default target
    .venv/bin/python scripts/mutate.py --only fencing  # targets whose group matches
    .venv/bin/python scripts/mutate.py --list          # the mutants, without running tests

Needs only the standard library and the project's test dependencies.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A function (``Class.method`` or ``function``) in a file, and the tests that guard it."""

    group: str
    path: str
    qualname: str
    tests: tuple[str, ...]


_CKPT_TESTS = (
    "tests/unit/checkpoint/test_checkpoint_drivers.py",
    "tests/unit/checkpoint/test_checkpoint_corruption.py",
    "tests/unit/checkpoint/test_checkpoint_retention.py",
    "tests/unit/checkpoint/test_checkpoint_storage.py",
    "tests/unit/checkpoint/test_checkpoint_inline.py",
    "tests/unit/checkpoint/test_checkpoint_snapshot_policy.py",
    "tests/unit/checkpoint/test_checkpoint_sources.py",
    "tests/unit/checkpoint/test_checkpoint_integrity.py",
    "tests/unit/scheduler/test_listener_events.py",  # the bytes a batch writes to the checkpoint are reported
    "tests/property/test_recovery_model.py::test_restarts_at_random_batch_boundaries_match_the_model",
)
# A kill at every point during recovery (one case per point, ~15 s): the whole matrix per mutant would take hours.
_FAULT_TESTS = ("tests/faults/test_crash_points.py::test_crash_again_during_recovery",)
_REDIS_TESTS = ("tests/integration/test_redis_sink.py", "tests/integration/test_kafka_redis_e2e.py")
_WINDOW_TESTS = (
    "tests/property/test_windows.py",
    "tests/property/test_recovery_model.py::test_restarts_at_random_batch_boundaries_match_the_model",
    "tests/unit/operators/test_operators.py",
)

TARGETS: tuple[Target, ...] = (
    Target("fencing", "streamkeep/checkpoint/_checkpoint.py", "Checkpoint.commit", _CKPT_TESTS + _FAULT_TESTS),
    Target("fencing", "streamkeep/checkpoint/_checkpoint.py", "Checkpoint._create", _CKPT_TESTS),
    Target("fencing", "streamkeep/checkpoint/_checkpoint.py", "Checkpoint.claim", _CKPT_TESTS),
    Target("fencing", "streamkeep/checkpoint/_checkpoint.py", "Checkpoint._check_lease", _CKPT_TESTS + _FAULT_TESTS),
    Target("checkpoint", "streamkeep/checkpoint/_format.py", "unframe", _CKPT_TESTS),
    Target("checkpoint", "streamkeep/checkpoint/storage.py", "CheckpointStorage._local_write", _CKPT_TESTS),
    Target("checkpoint", "streamkeep/scheduler/_scheduler.py", "Scheduler._recover", _CKPT_TESTS + _FAULT_TESTS),
    Target("checkpoint", "streamkeep/scheduler/_scheduler.py", "Scheduler._retain", _CKPT_TESTS + _FAULT_TESTS),
    Target("checkpoint", "streamkeep/scheduler/_scheduler.py", "Scheduler._sweep", _CKPT_TESTS + _FAULT_TESTS),
    Target("checkpoint", "streamkeep/scheduler/_scheduler.py", "Scheduler._commit", _CKPT_TESTS + _FAULT_TESTS),
    Target("marker", "streamkeep/sinks/redis.py", "RedisSink._apply", _REDIS_TESTS),
    Target("window", "streamkeep/executors/_runtime.py", "ReduceWindowRuntime._running", _WINDOW_TESTS),
    Target("window", "streamkeep/executors/_runtime.py", "ReduceWindowRuntime.delta", _WINDOW_TESTS + _CKPT_TESTS),
    Target("window", "streamkeep/executors/_runtime.py", "ReduceWindowRuntime.load", _WINDOW_TESTS + _CKPT_TESTS),
    Target("window", "streamkeep/executors/_runtime.py", "WindowRuntime._prune", _WINDOW_TESTS + _CKPT_TESTS),
)

_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.GtE: ast.Gt,
    ast.Gt: ast.GtE,
    ast.LtE: ast.Lt,
    ast.Lt: ast.LtE,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutant:
    target: Target
    index: int
    line: int
    change: str
    source: str  # the whole mutated file


def _find(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    parts = qualname.split(".")
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in parts:
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            msg = f"{qualname}: {part!r} not found"
            raise SystemExit(msg)
        body = node.body
    assert isinstance(node, ast.FunctionDef)
    return node


def _sites(fn: ast.FunctionDef) -> Iterator[tuple[ast.AST, str, int]]:
    """(node, kind, variant) for every mutation site in `fn` (nested functions included)."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _FLIP:
                    yield node, "cmp", i
        elif isinstance(node, ast.BoolOp):
            yield node, "boolop", 0
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not", 0
        elif isinstance(node, (ast.If, ast.While)):
            yield node, "cond", 0
            yield node, "cond", 1
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            yield node, "int", 0
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, "drop-call", 0
        elif isinstance(node, ast.Return) and node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield node, "return-none", 0
        elif isinstance(node, ast.Raise):
            yield node, "drop-raise", 0


def _apply(node: ast.AST, kind: str, variant: int) -> str:
    """Mutate `node` in place (``not`` and the drops are swapped by `mutants`); describe the change."""
    before = ast.unparse(node).splitlines()[0][:100]
    if kind == "cmp":
        assert isinstance(node, ast.Compare)
        node.ops[variant] = _FLIP[type(node.ops[variant])]()
    elif kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "cond":
        assert isinstance(node, (ast.If, ast.While))
        node.test = ast.Constant(value=bool(variant))
    elif kind == "int":
        assert isinstance(node, ast.Constant)
        assert type(node.value) is int
        node.value = node.value + 1
    elif kind in ("drop-call", "drop-raise"):
        pass  # replaced by `pass` in `_mutants`
    elif kind == "return-none":
        assert isinstance(node, ast.Return)
        node.value = ast.Constant(value=None)
    after = "(removed)" if kind.startswith("drop") else ast.unparse(node).splitlines()[0][:100]
    return f"{kind}: {before!r} -> {after!r}"


class _Swap(ast.NodeTransformer):
    """Replace one node (by identity) with another."""

    def __init__(self, old: ast.AST, new: ast.AST) -> None:
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.old:
            return self.new
        out: ast.AST = super().visit(node)
        return out


def _swap(tree: ast.Module, old: ast.AST, new: ast.AST) -> ast.Module:
    out = _Swap(old, new).visit(tree)
    assert isinstance(out, ast.Module)
    return out


def mutants(target: Target) -> list[Mutant]:
    src = (ROOT / target.path).read_text()
    base = ast.parse(src)
    count = sum(1 for _ in _sites(_find(base, target.qualname)))
    out = []
    for i in range(count):
        tree = copy.deepcopy(base)
        node, kind, variant = list(_sites(_find(tree, target.qualname)))[i]
        line = getattr(node, "lineno", 0)
        if kind == "not":
            assert isinstance(node, ast.UnaryOp)
            change = f"not: {ast.unparse(node)[:100]!r} -> {ast.unparse(node.operand)[:100]!r}"
            tree = _swap(tree, node, node.operand)
        elif kind in ("drop-call", "drop-raise"):
            change = _apply(node, kind, variant)
            tree = _swap(tree, node, ast.copy_location(ast.Pass(), node))
        else:
            change = _apply(node, kind, variant)
        ast.fix_missing_locations(tree)
        out.append(Mutant(target, i, line, change, ast.unparse(tree)))
    return out


def _scratch_copy() -> Path:
    d = Path(tempfile.mkdtemp(prefix="streamkeep-mutate-"))
    for name in ("streamkeep", "tests"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", d / "pyproject.toml")
    return d


def run_tests(work: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[bool, str]:
    """(killed, how): True when some test failed (or the run timed out)."""
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", "120", *tests]
    try:
        r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return True, "timeout"
    if r.returncode == 0:
        return False, ""
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return True, failed[0][:160] if failed else f"exit {r.returncode}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run targets whose group or qualname contains this")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    targets = [t for t in TARGETS if args.only in t.group or args.only in t.qualname]
    all_mutants = [m for t in targets for m in mutants(t)]
    if args.list:
        for m in all_mutants:
            print(f"{m.target.path}:{m.line} {m.target.qualname} #{m.index} {m.change}")
        print(f"{len(all_mutants)} mutants in {len(targets)} targets")
        return 0
    work = _scratch_copy()
    results = []
    t0 = time.monotonic()
    try:
        for n, m in enumerate(all_mutants, 1):
            path = work / m.target.path
            original = (ROOT / m.target.path).read_text()
            path.write_text(m.source)
            try:
                killed, how = run_tests(work, m.target.tests, args.timeout)
            finally:
                path.write_text(original)
            status = "killed" if killed else "SURVIVED"
            print(f"[{n}/{len(all_mutants)}] {status:8} {m.target.path}:{m.line} {m.target.qualname}: {m.change}  {how}", flush=True)
            results.append({"target": m.target.qualname, "path": m.target.path, "line": m.line, "change": m.change, "killed": killed, "by": how})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    survivors = [r for r in results if not r["killed"]]
    print(f"\n{len(results)} mutants, {len(results) - len(survivors)} killed, {len(survivors)} survived ({time.monotonic() - t0:.0f} s)")
    for r in survivors:
        print(f"  SURVIVED {r['path']}:{r['line']} {r['target']}: {r['change']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

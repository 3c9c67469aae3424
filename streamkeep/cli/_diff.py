"""`streamkeep checkpoint diff URL APP.py`: would APP.py's code take over the checkpoint.

Builds APP.py's graph without running the job (`streamkeep.context.hold_jobs`) and
compares it with the checkpoint's stored description (`scheduler._compat`): which
operators restore, start fresh, are dropped or are incompatible. Exit 0 when the code
can take over the checkpoint, 1 when it cannot. Read-only (see `streamkeep.cli._common`).
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any

from streamkeep.cli._common import iso, open_checkpoint, read_records, short
from streamkeep.context import JobHeld, StreamingContext, _same_checkpoint, hold_jobs
from streamkeep.errors import CheckpointError, ConfigError, IncompatibleCheckpointError
from streamkeep.scheduler._compat import DIFF_HINT, changed_feeds, check_compatible, derived_kind, differences


def _build_app(app: str, args: Sequence[str] = (), *, pyspark: bool = False) -> StreamingContext:
    """Run APP.py with its job held back from running; return the context it builds."""
    path = os.path.abspath(app)
    if not os.path.isfile(path):
        msg = f"{app}: no such file (the job's Python file whose graph to compare with the checkpoint)"
        raise ConfigError(msg)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))
    with hold_jobs() as held:
        try:
            runpy.run_path(path, run_name="__main__")
        except JobHeld:
            pass
        except SystemExit as exc:
            if exc.code not in (None, 0) and not held.created:
                msg = f"{app} exited with status {exc.code} before building a StreamingContext"
                raise CheckpointError(msg) from exc
        except Exception as exc:
            msg = f"{app} raised {type(exc).__name__}: {exc} while building its job"
            if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "pyspark" and not pyspark:
                msg += f"; for a PySpark program, run `streamkeep checkpoint diff --pyspark URL {app}`"
            raise CheckpointError(msg) from exc
        finally:
            sys.argv = saved_argv
            sys.path[:] = saved_path
    ssc = held.job()
    if ssc is None:
        msg = f"{app} did not create a StreamingContext"
        raise CheckpointError(msg)
    return ssc


def _listed(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def diff(url: str, app: str, args: Sequence[str] = (), *, storage_options: dict[str, Any] | None = None, pyspark: bool = False) -> int:
    """Compare the graph APP.py (run with `args`) builds with the checkpoint; 0 when it would restore, 1 when not.

    With `pyspark`, ``import pyspark`` in APP.py resolves to streamkeep's PySpark facade.
    """
    ckpt = open_checkpoint(url, storage_options)
    records, bad = read_records(ckpt)
    commits = [r for r in records if r.kind == "commit"]
    if pyspark:
        from streamkeep.compat.pyspark import install

        install()
    ssc = _build_app(app, args, pyspark=pyspark)
    current = ssc._graph.describe()
    print(f"checkpoint {url} vs the job {app} builds:")
    if ssc.checkpoint_url is not None and not _same_checkpoint(ssc.checkpoint_url, url):
        print(f"  note: {app} points its context at checkpoint {ssc.checkpoint_url!r}, not {url!r}; comparing with {url!r}")
    for msg in bad:
        print(f"  note: unreadable log record {msg}")
    if not commits:
        print("  nothing committed yet: the job starts fresh (every stateful operator starts empty)")
        return 0
    last = commits[0]
    stored = ckpt.graph_of(last)  # CorruptCheckpointError when the graph file it names is damaged
    print(f"  stored by the commit of batch {last.batch_time} ms ({iso(last.batch_time)})")
    d = differences(stored, current)
    s_ops, c_ops = stored.get("operators", {}), current.get("operators", {})
    allowed = ssc._allow_state_loss

    def line(label: str, names: list[str], ops: dict[str, Any]) -> None:
        if names:
            print(f"  {label}:")
            for n in names:
                print(f"    {n} ({ops.get(n, {}).get('kind', '?')})")

    swapped = changed_feeds(stored, current, frozenset(ssc._graph.pinned))
    rewired = {n for n, _, _ in swapped["operators"] + swapped["unmatched"]}
    line("restores (state carried over)", [n for n in d["restored"] if n not in rewired], c_ops)
    line("new (starts empty or from initial=)", d["new"], c_ops)
    if d["dropped"]:
        print("  dropped (state in the checkpoint, operator not in the code):")
        for n in d["dropped"]:
            extra = " -- allowed by allow_state_loss" if n in allowed else ""
            print(f"    {n} ({s_ops[n].get('kind', '?')}){extra}")
    if d["incompatible"]:
        print("  incompatible (changed shape):")
        for n, why in d["incompatible"]:
            extra = " -- allowed by allow_state_loss (starts empty)" if n in allowed else ""
            print(f"    {n}: {why}{extra}")
    if swapped["operators"] or swapped["unmatched"] or swapped["sources"]:
        print("  derived names whose inputs changed (unnamed operators or sources created in another order?):")
        for n, old, new in swapped["operators"]:
            extra = " -- allowed by allow_state_loss (starts empty)" if n in allowed else ""
            print(f"    {n} ({c_ops[n].get('kind', '?')}) reads {_listed(new)}; its stored state was built from {_listed(old)}{extra}")
        for n, old, new in swapped["unmatched"]:
            extra = " -- allowed by allow_state_loss (starts empty)" if n in allowed else ""
            print(f"    {n} ({c_ops[n].get('kind', '?')}) reads {_listed(new)}, built from {_listed(old)}: none in both (inputs cannot be matched){extra}")
        for n, old, new in swapped["sources"]:
            extra = " -- allowed by allow_state_loss (starts from its configured start)" if n in allowed else ""
            print(f"    source {n} feeds {_listed(new)}; it fed {_listed(old)}{extra}")
        print("    stored inputs of the numbered names (name each operator and source after the one matching its inputs):")
        for n, desc in s_ops.items():
            if isinstance(desc.get("feeds"), list) and derived_kind(n, desc) is not None:
                print(f"      {n} ({desc.get('kind', '?')}) read {_listed(desc['feeds'])}")
    s_src, c_src = stored.get("sources", {}), current.get("sources", {})
    bad_src = {n for n, _ in d["sources_incompatible"]}
    restored_src = [n for n in c_src if n in s_src and n not in bad_src and n not in {m for m, _, _ in swapped["sources"]}]
    positions = last.data.get("positions", {})
    if restored_src:
        print("  sources continuing from their stored position:")
        for n in restored_src:
            print(f"    {n} ({c_src[n].get('kind', '?')}) at {short(positions.get(n))}")
    for n, what in d["sources_changed"]:
        print(f"  source {n} changed: {what}")
    line("new sources (start from their configured start)", d["sources_new"], c_src)
    if d["sources_dropped"]:
        print("  sources with a stored position that no source of the code takes over (renamed or removed):")
        for n in d["sources_dropped"]:
            kind = s_src[n].get("kind", "?")
            extra = " -- allowed by allow_state_loss (its position is dropped)" if n in allowed else ""
            print(f"    {n} ({kind}) at {short(positions.get(n))}{extra}")
    for n, why in d["sources_incompatible"]:
        extra = " -- allowed by allow_state_loss (starts from its configured start)" if n in allowed else ""
        print(f"  incompatible source {n}: {why}{extra}")
    s_iv, c_iv = stored.get("batch_interval_ms"), current.get("batch_interval_ms")
    if s_iv != c_iv:
        print(f"  batch interval: {s_iv} ms -> {c_iv} ms")
    try:
        check_compatible(stored, current, allowed, url, frozenset(ssc._graph.pinned))
    except IncompatibleCheckpointError as exc:
        print("verdict: INCOMPATIBLE -- get_or_create would raise IncompatibleCheckpointError:")
        for ln in str(exc).replace(f" {DIFF_HINT}", "").splitlines()[1:]:
            print(f"  {ln}")
        return 1
    print("verdict: compatible -- get_or_create restores this checkpoint into the new code")
    return 0

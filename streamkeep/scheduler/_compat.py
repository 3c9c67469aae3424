"""Is the current graph able to take over a checkpoint's state? (code-change rules)

Stateful operators are matched by name. Restores: changed functions, added or
removed stateless operators, new stateful operators (they start empty or from
`initial`), new sources. Fails with `IncompatibleCheckpointError`: a stateful
operator that disappeared, changed kind or changed window shape, a source that
changed kind, or a batch interval change under windows -- unless the operator is
listed in ``allow_state_loss``.
"""

from __future__ import annotations

from typing import Any

from streamkeep.errors import IncompatibleCheckpointError

_SHAPE = ("kind", "length_ms", "slide_ms", "parent_slide_ms", "inverse", "timeout")


def differences(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, list[Any]]:
    """Classify operators: restored, new, dropped, incompatible (with reasons)."""
    s_ops: dict[str, Any] = stored.get("operators", {})
    c_ops: dict[str, Any] = current.get("operators", {})
    out: dict[str, list[Any]] = {"restored": [], "new": [], "dropped": [], "incompatible": [], "sources_new": [], "sources_dropped": [], "sources_incompatible": []}
    for name, desc in c_ops.items():
        old = s_ops.get(name)
        if old is None:
            out["new"].append(name)
            continue
        diffs = [f"{k} {old.get(k)!r} -> {desc.get(k)!r}" for k in _SHAPE if old.get(k) != desc.get(k)]
        if diffs:
            out["incompatible"].append((name, "; ".join(diffs)))
        else:
            out["restored"].append(name)
    out["dropped"] = [n for n in s_ops if n not in c_ops]
    s_src: dict[str, Any] = stored.get("sources", {})
    c_src: dict[str, Any] = current.get("sources", {})
    for name, desc in c_src.items():
        old = s_src.get(name)
        if old is None:
            out["sources_new"].append(name)
        elif old.get("kind") != desc.get("kind"):
            out["sources_incompatible"].append((name, f"kind {old.get('kind')!r} -> {desc.get('kind')!r}"))
    out["sources_dropped"] = [n for n in s_src if n not in c_src]
    return out


def check_compatible(stored: dict[str, Any], current: dict[str, Any], allow_state_loss: frozenset[str], url: str) -> None:
    """Raise IncompatibleCheckpointError when state would be lost or misread."""
    d = differences(stored, current)
    problems = []
    for name in d["dropped"]:
        if name not in allow_state_loss:
            kind = stored["operators"][name].get("kind")
            problems.append(
                f"- stateful operator {name!r} ({kind}) has state in the checkpoint but is not in the current code. "
                f"If you renamed it, give it back name={name!r}; to drop its state, pass allow_state_loss={{{name!r}}}."
            )
    for name, why in d["incompatible"]:
        if name not in allow_state_loss:
            problems.append(
                f"- stateful operator {name!r} changed shape ({why}); its stored state cannot be used. Restore the old "
                f"shape, give the changed operator a new name (it then starts empty), or pass allow_state_loss={{{name!r}}}."
            )
    for name, why in d["sources_incompatible"]:
        if name not in allow_state_loss:
            problems.append(f"- source {name!r} changed {why}; its stored position means nothing to the new source. Give the new source another name, or pass allow_state_loss={{{name!r}}}.")
    s_iv, c_iv = stored.get("batch_interval_ms"), current.get("batch_interval_ms")
    if s_iv is not None and s_iv != c_iv and any("length_ms" in o for o in current.get("operators", {}).values()):
        problems.append(f"- the batch interval changed from {s_iv} ms to {c_iv} ms while window operators keep per-batch state; keep {s_iv} ms or start a fresh checkpoint.")
    if problems:
        msg = (
            f"the current code cannot take over checkpoint {url}:\n" + "\n".join(problems)
            + "\nOr start fresh with a new checkpoint URL. Run `streamkeep checkpoint diff URL APP.py` to see every difference."
        )
        raise IncompatibleCheckpointError(msg)


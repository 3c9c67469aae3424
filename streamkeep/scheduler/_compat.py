"""Is the current graph able to take over a checkpoint's state? (code-change rules)

Stateful operators are matched by name. Restores: changed functions, added or
removed stateless operators, new stateful operators (they start empty or from
`initial`), new sources (they start from their configured start). Fails with
`IncompatibleCheckpointError`: a stateful operator that disappeared, changed kind
or changed window shape; a source whose stored position no source of the code
takes over (renamed or removed), that changed kind, or whose stored position
means nothing to its new configuration (a text file source reading another
directory, a Kafka source none of whose topics it read before); or a batch
interval change under windows -- unless the operator or source is listed in
``allow_state_loss`` (it then starts empty, a source from its configured start).
Also fails, whatever ``allow_state_loss`` says (the risk is an operator reading
another one's state, not losing its own): a new stateful operator or source with
a derived name (``KIND#N``) when the checkpoint holds derived names of its kind
(it may have taken an old one's name), and code that gives some operators of a
kind a name of the shape ``KIND#N`` while others of that kind have none (their
derived numbers then skip the pinned ones, so an unnamed one can take a dropped
one's name) when the checkpoint holds such names of that kind.
Also fails (lifted per name by ``allow_state_loss``, which starts it empty): a stateful
operator with a derived name in both descriptions whose inputs changed, when its kind
holds two or more derived names; two or more of a kind whose inputs are all renamed
sources; a derived source a stateful operator moved to from another derived source of
its kind (`changed_feeds`): each operator's description lists its feeds (the sources and
stateful operators it reads), and two unnamed ones of a kind created in another order swap
names, so each would get the other's state or position. User-given operator names and
descriptions stored without feeds (older checkpoints) are not checked.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from streamkeep.errors import IncompatibleCheckpointError
from streamkeep.executors.kinds import shape_keys, state_change

#: The last sentence of an incompatibility error; `streamkeep checkpoint diff` leaves it out of its own output.
DIFF_HINT = "Run `streamkeep checkpoint diff URL APP.py` to see every difference."
#: Where allow_state_loss goes (the messages above only name it).
ALLOW_HINT = (
    "\nallow_state_loss is an argument of the StreamingContext your setup function builds: "
    "sk.StreamingContext(interval, checkpoint=..., allow_state_loss={'name', ...}); in a PySpark program, "
    "conf.set('spark.streamkeep.allowStateLoss', 'name,...') on the SparkConf."
)

#: Source kinds whose position is empty: removing one loses nothing.
_POSITIONLESS = frozenset({"constant"})


def _source_change(old: dict[str, Any], new: dict[str, Any]) -> tuple[str | None, str | None]:
    """(why the stored position cannot be used, or None; a change that keeps it usable, or None)."""
    if old.get("kind") != new.get("kind"):
        return f"kind {old.get('kind')!r} -> {new.get('kind')!r}", None
    kind = new.get("kind")
    if kind in ("text_files", "binary_records"):
        o, n = old.get("path"), new.get("path")
        if o is not None and n is not None and o != n:  # checkpoints before 0.x did not store "path" (binary_records: before s10)
            return f"directory {o!r} -> {n!r} (the stored position lists files of the old directory)", None
    elif kind == "kafka":
        o_t, n_t = set(old.get("topics") or ()), set(new.get("topics") or ())
        if o_t and n_t and not o_t & n_t:
            return f"topics {sorted(o_t)} -> {sorted(n_t)} (the stored offsets are for topics it no longer reads)", None
        if o_t != n_t:
            parts = []
            if n_t - o_t:
                parts.append(f"topics {sorted(n_t - o_t)} added (they start from starting_offsets)")
            if o_t - n_t:
                parts.append(f"topics {sorted(o_t - n_t)} removed (their offsets are dropped)")
            return None, "; ".join(parts)
    return None, None


_DERIVED = re.compile(r"^(.+)#([0-9]+)$")


def derived_kind(name: str, desc: dict[str, Any]) -> str | None:
    """The kind when `name` has the shape of a derived name (``KIND#N`` of its own kind), else None."""
    m = _DERIVED.match(name)
    return m.group(1) if m is not None and m.group(1) == desc.get("kind") else None


def ambiguous_derived(
    stored: dict[str, Any], current: dict[str, Any], new: list[str], section: str, pinned: frozenset[str] = frozenset()
) -> list[str]:
    """New names in `section` that are derived (``KIND#N``) while the checkpoint holds derived names of that kind.

    Derived names number operators (or sources) of one kind in program order, so adding one
    without ``name=`` renumbers the ones after it: the new one inserted before an old one takes
    the old one's name and state. Appending it after them gives the same descriptions, so the
    two cannot be told apart, and either could hand one operator another's state. Names in
    `pinned` (given by the user) are exact and left out.
    """
    stored_kinds = set(_derived_counts(stored, section))
    cur = current.get(section, {})
    return [n for n in new if n not in pinned and derived_kind(n, cur.get(n, {})) in stored_kinds]


def mixed_pins(stored: dict[str, Any], current: dict[str, Any], section: str, pinned: frozenset[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Kinds of `section` whose current names mix user-given ``KIND#N`` names with derived ones: kind -> (pinned, derived).

    Only kinds the checkpoint holds ``KIND#N`` names of. Derived numbers skip the pinned
    ones, so an unnamed operator can take the number (and state) of a dropped one while the
    name sets still match: pinning ``#2`` after dropping ``#1`` makes a new unnamed one ``#1``.
    """
    stored_kinds = set(_derived_counts(stored, section))
    out: dict[str, tuple[list[str], list[str]]] = {}
    for n, d in current.get(section, {}).items():
        kind = derived_kind(n, d)
        if kind is not None and kind in stored_kinds:
            out.setdefault(kind, ([], []))[0 if n in pinned else 1].append(n)
    return {k: v for k, v in out.items() if v[0] and v[1]}


def _resolved_feeds(desc: dict[str, Any], name: str, other: dict[str, Any]) -> set[str] | None:
    """Operator `name`'s feeds in `desc` as names `other` knows too; None when `desc` stores no feeds for it.

    A feed that is a stateful operator `other` lacks (added or dropped between the two) is
    replaced by its own feeds, so inserting or removing a stateful operator upstream keeps
    the feeds equal. Other names `other` lacks (added, dropped or renamed sources) are left
    out: their own checks report them.
    """
    ops: dict[str, Any] = desc.get("operators", {})
    first = ops.get(name, {}).get("feeds")
    if not isinstance(first, list):
        return None
    o_ops, o_src = other.get("operators", {}), other.get("sources", {})
    out: set[str] = set()
    seen: set[str] = set()
    stack = list(first)
    while stack:
        f = stack.pop()
        if f in seen:
            continue
        seen.add(f)
        if f in o_ops or f in o_src:
            out.add(f)
        elif f in ops and isinstance(ops[f].get("feeds"), list):
            stack.extend(ops[f]["feeds"])
    return out


def _all_feeds(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[set[str], set[str]]]:
    """Operators in both descriptions that store feeds on both sides: name -> (stored feeds, current feeds)."""
    out = {}
    for name in current.get("operators", {}):
        if name not in stored.get("operators", {}):
            continue
        old, new = _resolved_feeds(stored, name, current), _resolved_feeds(current, name, stored)
        if old is not None and new is not None:
            out[name] = (old, new)
    return out


def _derived_counts(desc: dict[str, Any], section: str) -> Counter[str]:
    """Kind -> how many names of `desc`'s `section` have its derived shape (``KIND#N``)."""
    return Counter(k for n, d in desc.get(section, {}).items() if (k := derived_kind(n, d)) is not None)


def _derived_sources(desc: dict[str, Any], pinned: frozenset[str]) -> dict[str, str]:
    """Source name -> kind, for the sources of `desc` with a derived name (not in `pinned`)."""
    return {n: k for n, d in desc.get("sources", {}).items() if n not in pinned and (k := derived_kind(n, d)) is not None}


def changed_feeds(stored: dict[str, Any], current: dict[str, Any], pinned: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """Derived names whose inputs changed: the code may have swapped two unnamed operators (or sources) of a kind.

    ``operators``: (name, stored feeds, current feeds) of stateful operators with a derived
    name (``KIND#N``, not in `pinned`) of a kind holding two or more derived names (stored or
    current) reading other sources or stateful operators than the ones its stored state was
    built from. The only derived name of its kind cannot have swapped with another (a dropped
    one shifting the numbers is refused as dropped), so its inputs may change. ``unmatched``:
    (name, stored feeds, current feeds) of such operators whose feeds are all renamed (or new)
    sources on both sides, when two or more of its kind are: nothing tells them apart (one alone
    is told apart by the others keeping theirs). ``sources``: (name, stored readers, current
    readers) of derived sources of a kind with two or more derived sources on both sides, when
    a stateful operator moved from one of them to another. Readers with user-given names count:
    they follow their names, so two unnamed sources swapped under them show as each named
    operator moving to the other source. Descriptions without feeds (checkpoints written
    before feeds were stored) are not compared. A name the user gave says which operator is
    which: its feeds may change.
    """
    feeds = _all_feeds(stored, current)
    s_ops, c_ops = stored.get("operators", {}), current.get("operators", {})
    counts = _derived_counts(stored, "operators") | _derived_counts(current, "operators")  # the larger count
    out: dict[str, list[Any]] = {"operators": [], "unmatched": [], "sources": []}
    unmatched: dict[str, list[Any]] = {}
    for name, (old, new) in feeds.items():
        kind = derived_kind(name, c_ops[name])
        if name in pinned or kind is None or derived_kind(name, s_ops[name]) is None or counts.get(kind, 0) < 2:
            continue
        if old != new:
            out["operators"].append((name, sorted(old), sorted(new)))
        elif not old and (s_ops[name]["feeds"] or c_ops[name]["feeds"]):
            unmatched.setdefault(kind, []).append((name, sorted(s_ops[name]["feeds"]), sorted(c_ops[name]["feeds"])))
    out["unmatched"] = [u for found in unmatched.values() if len(found) >= 2 for u in found]
    s_der, c_der = _derived_sources(stored, pinned), _derived_sources(current, pinned)
    src_kinds = {k for k, c in (Counter(s_der.values()) & Counter(c_der.values())).items() if c >= 2}  # on both sides
    moved: set[str] = set()
    for old, new in feeds.values():
        for kind in src_kinds:
            left = {f for f in old - new if s_der.get(f) == kind and c_der.get(f) == kind}
            came = {f for f in new - old if s_der.get(f) == kind and c_der.get(f) == kind}
            if left and came:
                moved |= left | came
    for name in sorted(moved):
        old_r = sorted(op for op, (old, _) in feeds.items() if name in old)
        new_r = sorted(op for op, (_, new) in feeds.items() if name in new)
        out["sources"].append((name, old_r, new_r))
    return out


def differences(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, list[Any]]:
    """Classify operators and sources: restored, new, dropped, incompatible (with reasons).

    Sources: ``sources_new`` and ``sources_dropped`` (names), ``sources_incompatible``
    (name, reason: the stored position cannot be used) and ``sources_changed``
    (name, what changed while the stored position stays usable).
    """
    s_ops: dict[str, Any] = stored.get("operators", {})
    c_ops: dict[str, Any] = current.get("operators", {})
    out: dict[str, list[Any]] = {
        "restored": [],
        "new": [],
        "dropped": [],
        "incompatible": [],
        "sources_new": [],
        "sources_dropped": [],
        "sources_incompatible": [],
        "sources_changed": [],
    }
    shape = shape_keys()
    for name, desc in c_ops.items():
        old = s_ops.get(name)
        if old is None:
            out["new"].append(name)
            continue
        diffs = [f"{k} {old.get(k)!r} -> {desc.get(k)!r}" for k in shape if old.get(k) != desc.get(k)]
        why = state_change(old, desc)
        if why is not None:
            diffs.append(f"state schema: {why}")
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
            continue
        why, changed = _source_change(old, desc)
        if why is not None:
            out["sources_incompatible"].append((name, why))
        elif changed is not None:
            out["sources_changed"].append((name, changed))
    out["sources_dropped"] = [n for n in s_src if n not in c_src]
    return out


def _names(names: list[str], none: str) -> str:
    """Names for a message: 'a', 'b' (`none` when there are none)."""
    return ", ".join(repr(n) for n in names) if names else none


def _another_jobs_hint(stored: dict[str, Any], current: dict[str, Any], url: str) -> str:
    """A line for a refusal where no stored stateful operator is in the code: likely another job's checkpoint."""
    olds = sorted(stored.get("operators", {}))
    if not olds or set(olds) & set(current.get("operators", {})):
        return ""
    return (
        f"\nNone of the checkpoint's stateful operators ({', '.join(repr(n) for n in olds)}) is in the current code: "
        f"if it is another job's checkpoint, give this job a checkpoint URL of its own "
        f"(`streamkeep checkpoint inspect {url}` shows what it holds)."
    )


def check_compatible(
    stored: dict[str, Any],
    current: dict[str, Any],
    allow_state_loss: frozenset[str],
    url: str,
    pinned: frozenset[str] = frozenset(),
) -> None:
    """Raise IncompatibleCheckpointError when state would be lost or misread.

    `pinned`: the current names the user gave in the derived shape ``KIND#N`` (`Graph.pinned`).
    """
    d = differences(stored, current)
    problems = []
    mixed = {section: mixed_pins(stored, current, section, pinned) for section in ("operators", "sources")}
    for section, what in (("operators", "stateful operator"), ("sources", "source")):
        for kind, (pins, derived) in mixed[section].items():
            problems.append(
                f"- the code names {', '.join(repr(n) for n in sorted(pins))} explicitly while "
                f"{', '.join(repr(n) for n in sorted(derived))} ({kind}) have no name=, and the checkpoint holds "
                f"{kind} {what}s under numbered names. Numbers derived next to pinned ones are ambiguous: an unnamed "
                f"one can take the number of a removed one and get its {'state' if section == 'operators' else 'position'}. "
                f"Give every {kind} {what} a name (name='{kind}#N' keeps the old number's "
                f"{'state' if section == 'operators' else 'position'}; a new one needs a new name)."
            )
    for section, what, new in (("operators", "stateful operator", d["new"]), ("sources", "source", d["sources_new"])):
        for name in ambiguous_derived(stored, current, new, section, pinned):
            kind = current[section][name].get("kind")
            if kind in mixed[section]:
                continue  # reported above
            olds = sorted(n for n, o in stored.get(section, {}).items() if derived_kind(n, o) == kind)
            problems.append(
                f"- the code has a new {what} {name!r} ({kind}) without name=, and the checkpoint holds "
                f"{', '.join(repr(n) for n in olds)} under derived names. Derived names count {kind} {what}s in "
                f"program order, so if the new one comes before an old one it has taken that one's name and would "
                f"get its {'state' if section == 'operators' else 'position'}. Give the new {what} a name "
                f"(name='...', a streamkeep extension in PySpark programs); the others then keep their derived names."
                + (
                    f" Listing {name!r} in allow_state_loss does not lift this: the new one has no state to lose, the "
                    f"risk is it reading an old one's."
                    if name in allow_state_loss
                    else ""
                )
            )
    swapped = changed_feeds(stored, current, pinned)
    for name, old_f, new_f in swapped["operators"]:
        if name not in allow_state_loss:
            kind = current["operators"][name].get("kind")
            was, now = _names(old_f, "none of the current ones"), _names(new_f, "no source or operator of the checkpoint")
            problems.append(
                f"- stateful operator {name!r} ({kind}) has no name=, and it reads {now} while its stored state was "
                f"built from {was}. Derived names count unnamed {kind} operators (and sources of a kind) in program "
                f"order, so code that creates them in another order hands each one another one's state. Give each "
                f"stateful operator and source a stable name= (a streamkeep extension in PySpark programs); to keep "
                f"the stored state, name each one after the stored derived name of its inputs (here name={name!r} "
                f"on the operator reading {was}). Or pass allow_state_loss={{{name!r}}} to start it empty."
            )
    for name, old_f, new_f in swapped["unmatched"]:
        if name not in allow_state_loss:
            kind = current["operators"][name].get("kind")
            problems.append(
                f"- stateful operator {name!r} ({kind}) has no name=, and its inputs cannot be matched: its stored "
                f"state was built from {_names(old_f, 'nothing')}, it reads {_names(new_f, 'nothing')}, and none of "
                f"these is in both the checkpoint and the code (sources renamed?), as for other unnamed {kind} "
                f"operators. Derived names count unnamed {kind} operators in program order, so code that also "
                f"creates them in another order would hand each one another one's state unseen. Name each one after "
                f"its stored derived name (here name={name!r} on the operator whose input was {_names(old_f, 'nothing')}) "
                f"to keep its state, or pass allow_state_loss={{{name!r}}} to start it empty."
            )
    for name, old_r, new_r in swapped["sources"]:
        if name not in allow_state_loss:
            kind = current["sources"][name].get("kind")
            was, now = _names(old_r, "no stateful operator"), _names(new_r, "no stateful operator")
            problems.append(
                f"- source {name!r} ({kind}) has no name=, and it feeds {now} while its stored position was reached "
                f"feeding {was}. Derived names count unnamed {kind} sources in program order, so code that creates "
                f"them in another order hands each one another one's position. Give each source a stable name=; to "
                f"keep the stored positions, name each one after the stored derived name of the source that fed the "
                f"same operators (here name={name!r} on the source feeding {was}). Or pass "
                f"allow_state_loss={{{name!r}}} to start it from its configured start."
            )
    for name in d["dropped"]:
        if name not in allow_state_loss:
            kind = stored["operators"][name].get("kind")
            shifted = derived_kind(name, stored["operators"][name]) is not None and any(
                derived_kind(n, o) == kind for n, o in current.get("operators", {}).items()
            )
            hint = (
                f" Derived names count {kind} operators in program order: if you removed an earlier one, the ones "
                f"after it now carry its name and would get its state; pin each remaining one to its old name "
                f"(name='{kind}#N') before dropping any."
                if shifted
                else ""
            )
            problems.append(
                f"- stateful operator {name!r} ({kind}) has state in the checkpoint but is not in the current code. "
                f"If you renamed it, give it back name={name!r}; to drop its state, pass allow_state_loss={{{name!r}}}.{hint}"
            )
    for name, why in d["incompatible"]:
        if name not in allow_state_loss:
            problems.append(
                f"- stateful operator {name!r} changed shape ({why}); its stored state cannot be used. Restore the old "
                f"shape, give the changed operator a new name (it then starts empty), or pass allow_state_loss={{{name!r}}}."
            )
    s_src: dict[str, Any] = stored.get("sources", {})
    new_sources = ", ".join(f"{n!r}" for n in d["sources_new"])
    for name in d["sources_dropped"]:
        kind = s_src[name].get("kind")
        if name in allow_state_loss or kind in _POSITIONLESS:
            continue
        hint = f" (sources without a stored position: {new_sources})" if new_sources else ""
        problems.append(
            f"- source {name!r} ({kind}) has a position in the checkpoint but no source of the current code is named "
            f"{name!r}{hint}. A renamed source would start over from its configured start while the state built from "
            f"its input is restored (input counted twice or skipped). If you renamed it, give it back name={name!r}; "
            f"to drop its position, pass allow_state_loss={{{name!r}}}."
        )
    for name, why in d["sources_incompatible"]:
        if name not in allow_state_loss:
            problems.append(
                f"- source {name!r} changed {why}; its stored position means nothing to the new source. Restore the old "
                f"configuration, give the new source another name (and allow dropping the old one's position), or pass "
                f"allow_state_loss={{{name!r}}} to start it from its configured start."
            )
    s_iv, c_iv = stored.get("batch_interval_ms"), current.get("batch_interval_ms")
    if s_iv is not None and s_iv != c_iv and any("length_ms" in o for o in current.get("operators", {}).values()):
        problems.append(f"- the batch interval changed from {s_iv} ms to {c_iv} ms while window operators keep per-batch state; keep {s_iv} ms or start a fresh checkpoint.")
    if problems:
        where = ALLOW_HINT if any("allow_state_loss=" in p for p in problems) else ""
        where += _another_jobs_hint(stored, current, url)
        msg = (
            f"the current code cannot take over checkpoint {url}:\n" + "\n".join(problems) + where
            + "\nOr start fresh with a new checkpoint URL. " + DIFF_HINT
        )
        raise IncompatibleCheckpointError(msg)

"""Redis output applied exactly once per batch time (redis-py, one Lua script per batch).

Owns :class:`RedisSink`. redis-py is imported lazily (extra ``streamkeep[redis]``).
Imports only ``streamkeep.errors``, ``streamkeep._types`` and ``streamkeep.sinks.base``;
must not import sources, dstream, the scheduler or executors.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import TYPE_CHECKING, Any, overload

import msgpack

from streamkeep._types import BatchTime
from streamkeep._util import gc_paused, import_optional, retry_with_backoff, user_function_error
from streamkeep.errors import CheckpointInUseError, ConfigError, SinkError
from streamkeep.sinks.base import FencingToken

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

__all__ = ["RedisSink"]

log = logging.getLogger(__name__)

WriteFunction = Callable[["Pipeline", list[Any]], None]

#: Redis's Lua unpacks at most ~8000 values onto its stack: the most arguments one command may have here.
MAX_COMMAND_ARGS = 7900

# One batch, atomically (a script runs alone on the server): check the marker (skip an applied
# batch; refuse a fenced driver; re-run only the recorded failed commands of a partly applied
# one), validate every command before running any (unknown, wrong arity, not allowed: nothing
# applied), run them with pcall, and set the marker with the failures that remain. The script is
# _HEAD, then a loader (where the commands come from), then _RUN.
# ARGV: batch time, epoch ("" = unfenced), checkpoint id, n (commands), then the loader's.
_HEAD = r"""
local function parse(raw)
  local t = string.match(raw, '^(%-?%d+)')
  if not t then return nil end
  return tonumber(t), tonumber(string.match(raw, ' epoch=(%d+)')), string.match(raw, ' ckpt=(%w+)'),
         string.match(raw, ' failed=([%w/,]+)')
end
local bt, epoch, ckpt, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local raw = redis.call('GET', KEYS[1])
local only = nil
if raw then
  local t, e, c, f = parse(raw)
  if t == nil then return {'foreign', raw} end
  if epoch and e and c == ckpt and e > epoch then return {'fenced', raw} end
  if t > bt or (t == bt and not f) then cleanup(); return {'skip', raw} end
  if f then
    if t < bt then return {'blocked', raw} end
    only = {}
    for item in string.gmatch(f, '[^,]+') do
      local i, d = string.match(item, '^(%d+)/(%x+)$')
      if i then only[tonumber(i)] = d end
    end
  end
end
"""

# The sink's own batches (`RedisSink.write`): ARGV[5..] are msgpack arrays [argcs, args] (argcs: each
# command's argument count; args: all their arguments, as strings, one after the other), one unless the
# batch is huge (_PART_BYTES). Decoded only once the marker says the batch is to be applied.
# [argcs, args, 1]: args also holds integers (of 32 bits at most), which Redis gets in decimal: redis.call
# turns a Lua number into its digits itself ("%.17g", or its integer printer), exact for these, as
# redis-py sends them (a conversion here first cost the server ~3-6 ms per 10k-HSET batch).
_LOAD_PACKED = r"""local argcs, A
if #ARGV == 5 then
  local d = cmsgpack.unpack(ARGV[5])
  argcs, A = d[1], d[2] -- [3] (numbers among them) needs nothing: redis.call sends a number in decimal (exact)
else
  argcs, A = {}, {}
  for p = 5, #ARGV do
    local d = cmsgpack.unpack(ARGV[p])
    for _, c in ipairs(d[1]) do argcs[#argcs + 1] = c end
    for _, a in ipairs(d[2]) do A[#A + 1] = a end
  end
end
local starts, pos = {}, 1
for i = 1, #argcs do starts[i] = pos; pos = pos + argcs[i] end
"""

# A batch staged in parts (PartitionWritable): the commands come from the lists KEYS[2..] that the
# parts wrote (argc, args... per command). The lists are deleted once the batch is applied (or found
# applied). Staged commands that are gone (expired) fail after the marker check.
_LOAD_STAGED = r"""local A, starts, argcs = {}, {}, {}
for k = 2, #KEYS do
  local flat = redis.call('LRANGE', KEYS[k], 0, -1)
  local p = 1
  while flat[p] do
    local argc = tonumber(flat[p])
    starts[#starts + 1], argcs[#argcs + 1] = #A + 1, argc
    for j = p + 1, p + argc do A[#A + 1] = flat[j] end
    p = p + argc + 1
  end
end
if #starts ~= n then return {'staged', #starts, n} end
"""

# Command i is A[starts[i]] .. A[starts[i] + argcs[i] - 1]: run from A, no table per command.
_RUN = r"""local function digest(i)
  local parts, s = {}, starts[i]
  for j = 1, argcs[i] do local a = A[s + j - 1] .. ''; parts[j] = #a .. ':' .. a end -- a number as its digits
  return string.sub(redis.sha1hex(table.concat(parts, ' ')), 1, 12)
end
local run = nil -- the commands to run, in order; nil: all n
if only then
  for i, d in pairs(only) do
    if i > n or digest(i) ~= d then return {'changed', raw, i, n} end
  end
  run = {}
  for i = 1, n do if only[i] then run[#run + 1] = i end end
end
local total = run and #run or n
-- Validate each (command name, argument count) once: a batch repeats a few shapes many times.
local known, valid = {}, {}
for k = 1, total do
  local i = run and run[k] or k
  local s, argc = starts[i], argcs[i]
  local shape = valid[A[s]]
  if shape == nil then shape = {}; valid[A[s]] = shape end
  if not shape[argc] then
    local name = string.lower(A[s])
    if known[name] == nil then known[name] = redis.call('COMMAND', 'INFO', name)[1] end
    local info = known[name]
    if not info then return {'malformed', i, 'unknown command'} end
    local arity = info[2]
    if (arity > 0 and argc ~= arity) or (arity < 0 and argc < -arity) then
      return {'malformed', i, 'wrong number of arguments'}
    end
    for _, flag in ipairs(info[3]) do
      if (type(flag) == 'table' and flag['ok'] or flag) == 'noscript' then
        return {'malformed', i, 'not allowed inside a transaction or script'}
      end
    end
    shape[argc] = true
  end
end
local failed, errs = {}, {}
local pcall, unpack, type = redis.pcall, unpack, type
for k = 1, total do
  local i = run and run[k] or k
  local s = starts[i]
  local r = pcall(unpack(A, s, s + argcs[i] - 1))
  if type(r) == 'table' and r['err'] then
    failed[#failed + 1] = i .. '/' .. digest(i)
    if #errs < 40 then errs[#errs + 1] = i; errs[#errs + 1] = r['err'] end
  end
end
local m = ARGV[1]
if epoch then m = m .. ' epoch=' .. ARGV[2] .. ' ckpt=' .. ckpt end
if #failed > 0 then m = m .. ' failed=' .. table.concat(failed, ',') end
redis.call('SET', KEYS[1], m)
if #failed == 0 then cleanup() end
return {'applied', m, #failed, total, errs}
"""

_SCRIPT = "local function cleanup() end\n" + _HEAD + _LOAD_PACKED + _RUN
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()  # as Redis names it (SCRIPT LOAD returns it)
_STAGED_SCRIPT = "local function cleanup() for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end end\n" + _HEAD + _LOAD_STAGED + _RUN
#: How long a part's staged commands wait for their batch to be published (a crashed try leaves them).
STAGE_TTL_S = 86_400
_RPUSH_ARGS = 10_000  # values per RPUSH when staging

_MARKER_RE = re.compile(r"^(-?\d+)(?: epoch=(\d+) ckpt=(\w+))?(?: failed=([0-9a-f/,]+))?$")


@dataclass(frozen=True)
class _Marker:
    batch_time: BatchTime
    epoch: int | None = None
    checkpoint_id: str | None = None
    failed: str | None = None  # "i/digest,..." of commands that failed in that batch


@dataclass
class _Sent:
    """A batch whose script was sent and whose reply is not read yet."""

    batch_time: BatchTime
    args: list[Any]  # the script's ARGV, to run it again after a lost connection
    commands: _Commands  # to name a failed command
    conn: Any  # the connection the reply comes on; None once read (or lost)


def _import_redis() -> Any:
    return import_optional("redis", "RedisSink", "redis")


#: Bytes of packed commands per script argument (a part), at most; a command bigger than this goes alone in its part.
_PART_BYTES = 128 << 20
#: Bytes Redis takes in one argument (its default proto-max-bulk-len, 512 MB): a part of one command may not be bigger.
_BULK_LIMIT = 512 << 20
_TEXT = frozenset((str, bytes))
_PLAIN = frozenset((str, int, float))  # str(x) is what Redis gets: str as is, int and float as their repr
_TEXT_INT = frozenset((str, bytes, int))
_WIDE_INT = (b"\xcf", b"\xd3")  # msgpack's uint 64 and int 64 markers


def _packb(obj: Any) -> bytes:
    """msgpack without the bin and str8 types (spec 2.0), which Redis's Lua ``cmsgpack`` cannot decode: bytes and str both as raw."""
    packed: bytes = msgpack.packb(obj, use_bin_type=False)
    return packed


class _Commands(Sequence[tuple[Any, ...]]):
    """A batch's commands, flat as the script takes them: each one's argument count, and all their arguments in order.

    Indexing gives command ``i``'s arguments as a tuple (for error messages); the packing
    reads `argcs` and `args` as they are. Queueing into two flat lists instead of a tuple per
    command, then flattening the tuples for msgpack, costs the client ~6 ms less per batch of
    10k HSETs (bench/kafka.py), and the collector has one list to walk instead of 10k tuples.
    """

    __slots__ = ("_starts", "argcs", "args")

    def __init__(self, argcs: list[int], args: list[Any]) -> None:
        self.argcs = argcs
        self.args = args
        self._starts: list[int] | None = None

    def starts(self) -> list[int]:
        """Where each command's arguments begin in `args`, and (last) their total."""
        if self._starts is None:
            self._starts = [0, *accumulate(self.argcs)]
        return self._starts

    def __len__(self) -> int:
        return len(self.argcs)

    @overload
    def __getitem__(self, i: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, i: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.argcs)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            msg = f"command index {i} out of range ({n} commands)"
            raise IndexError(msg)
        starts = self.starts()
        return tuple(self.args[starts[j] : starts[j + 1]])

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        args, starts = self.args, self.starts()
        for i in range(len(self.argcs)):
            yield tuple(args[starts[i] : starts[i + 1]])


def _queueing(pipe: Any, argcs: list[int], args: list[Any]) -> dict[str, Callable[..., Any]]:
    """Methods of a pipeline that only queue (what redis-py's do when not watching), in fewer calls.

    redis-py's ``execute_command`` goes through a WATCH check and a second method for every
    command the write function queues; the sink refuses ``watch()`` and ``multi()``, so
    queueing is all it does: each command's argument count goes on `argcs` (also
    ``pipe.command_stack``, so ``len(pipe)`` counts the commands) and its arguments on
    `args` (redis-py's entries are ``(args, options)``; the sink only sends the arguments).
    ``hset(name, mapping=...)``, the usual way to write a record's fields, queues in one step
    the arguments redis-py's ``hset`` would queue (its other forms are redis-py's).
    """
    pipe.command_stack = argcs  # len(pipe) counts the commands queued
    count = argcs.append
    extend = args.extend
    hset_ = pipe.hset
    pairs = chain.from_iterable

    def execute_command(*cmd: Any, **_options: Any) -> Any:
        count(len(cmd))
        extend(cmd)
        return pipe

    def hset(name: Any, key: Any = None, value: Any = None, mapping: Any = None, items: Any = None) -> Any:
        if key is None and items is None and mapping:
            cmd = ("HSET", name, *pairs(mapping.items()))
            count(len(cmd))
            extend(cmd)
            return pipe
        return hset_(name, key, value, mapping, items)

    def hsets(hash_of: Callable[[Any], Any], records: Iterable[Any]) -> None:
        # RedisSink.hset_writer's queue: ``pipe.hset(key, mapping=m)`` (``items=`` for a flat field list) per
        # record, without a call per command. hash_of is called in the loop's body (not through map or a
        # generator, which would end the loop silently on a StopIteration it raises), and each command is
        # queued whole or not at all (a mapping's is built before any of it is queued; a flat list's is cut
        # off again), so an exception leaves the queue as it was before that record.
        for record in records:
            item = hash_of(record)
            if item is None:
                continue
            try:
                key, fields = item
                flat = type(fields) in _FLAT  # (isinstance costs the usual mapping ~0.1 us more per record)
                cmd = ("HSET", key) if flat else ("HSET", key, *pairs(fields.items()))
            except (TypeError, ValueError, AttributeError) as exc:
                raise TypeError(_bad_result(item)) from exc
            if flat:  # its items as they are: no tuple per command, nothing to pair up
                mark = len(args)
                try:
                    extend(cmd)
                    extend(fields)
                except BaseException:
                    del args[mark:]
                    raise
                n = len(args) - mark
                if n > 2 and not n & 1:
                    count(n)
                    continue
                del args[mark:]  # no field (HSET needs one): skipped; or a field without its value
                if n & 1:
                    raise TypeError(_odd_fields(key, n - 2))
                continue
            n = len(cmd)
            if n > 2:  # no field: skipped (HSET needs one)
                count(n)
                extend(cmd)

    return {"execute_command": execute_command, "hset": hset, _HSETS: hsets}


#: The queue-only pipeline's method `RedisSink.hset_writer` queues with (absent on a plain redis-py pipeline).
_HSETS = "_streamkeep_hsets"
_HASH_OF_RESULT = "hash_of must return (key, mapping), (key, [field, value, ...]) or None, not {!r:.80}"
#: What `hash_of` may return as a flat field sequence (``items=`` of redis-py's ``hset``); anything else is read as a mapping.
_FLAT = frozenset((list, tuple))


def _odd_fields(key: Any, n: int) -> str:
    return (
        f"hash_of returned {n} field list items for key {key!r:.60}: a flat field list alternates field and value, "
        "so it needs an even length"
    )


def _bad_result(item: Any) -> str:
    """`_HASH_OF_RESULT`, naming the fields' type when it is a sequence other than a plain list or tuple."""
    msg = _HASH_OF_RESULT.format(item)
    fields = item[1] if type(item) in _FLAT and len(item) == 2 else None
    if isinstance(fields, (list, tuple)) or (fields is not None and not hasattr(fields, "items")):
        msg += f" (its fields are a {type(fields).__name__}: a flat field list must be a plain list or tuple, e.g. list(fields))"
    return msg


def _own_hsets(pipe: Any) -> Callable[[Callable[[Any], Any], Iterable[Any]], None] | None:
    """The queue-only pipeline's `hsets` (`_queueing`), set on the pipeline object itself; None for any other pipeline.

    Looked up in the object's own attributes: a `unittest.mock.Mock` makes up any attribute it is asked for.
    """
    own = getattr(pipe, "__dict__", None)
    hsets = own.get(_HSETS) if isinstance(own, dict) else None
    return hsets if callable(hsets) else None


#: What `RedisSink.hset_writer`'s ``hash_of`` returns: ``(key, mapping)``, ``(key, [field, value, ...])`` or None.
HashOf = Callable[[Any], tuple[Any, Mapping[Any, Any] | list[Any] | tuple[Any, ...]] | None]


def _hset_writer(hash_of: HashOf) -> WriteFunction:
    """`RedisSink.hset_writer` (documented there)."""
    if not callable(hash_of):
        msg = "RedisSink.hset_writer: hash_of must be a callable(record) -> (key, mapping), (key, [field, value, ...]) or None"
        raise ConfigError(msg)

    def write(pipe: Any, records: list[Any]) -> None:
        hsets = _own_hsets(pipe)
        if hsets is not None:
            hsets(hash_of, records)
            return
        pairs = chain.from_iterable
        for record in records:  # a plain redis-py pipeline (or a mock, in a test of the write function): pipe.hset per record
            item: Any = hash_of(record)
            if item is None:
                continue
            try:
                key, fields = item
                flat = type(fields) in _FLAT
                n = len(fields) if flat else len((*pairs(fields.items()),))  # checked as the sink checks it (a str: TypeError)
            except (TypeError, ValueError, AttributeError) as exc:
                raise TypeError(_bad_result(item)) from exc
            if n & 1:
                raise TypeError(_odd_fields(key, n))
            if n and flat:
                pipe.hset(key, items=fields)
            elif n:
                pipe.hset(key, mapping=fields)

    write.__qualname__ = write.__name__ = f"hset_writer({getattr(hash_of, '__qualname__', hash_of)!s:.60})"
    return write


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _show(cmd: tuple[Any, ...], limit: int = 120) -> str:
    """A command as it is typed, arguments truncated: ``INCRBY 'a-list' 1``."""
    parts = [_text(cmd[0]).upper()]
    for a in cmd[1:]:
        if isinstance(a, (int, float)):
            parts.append(str(a))
            continue
        t = _text(a)
        parts.append(repr(t if len(t) <= 40 else t[:37] + "..."))
    out = " ".join(parts)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class RedisSink:
    """Writes each batch to Redis in one transaction, exactly once per batch time.

    For every batch time ``T`` the sink runs one Lua script on the server, which
    executes alone (nothing interleaves) and does, atomically: read the marker key
    (default ``streamkeep:sink:<name>:last_batch``) holding the last applied batch
    time; if it is ``>= T`` the batch was already applied (a replay after a crash
    between this write and the checkpoint commit) and nothing runs; otherwise run
    the commands that ``write(pipeline, records)`` queued, then set the marker to
    ``T``. So even non-idempotent commands (INCRBY, HINCRBY, LPUSH) take effect
    exactly once. The marker is read first without the script, too, so ``write``
    is not called for a batch that is clearly applied (after the sink applied the
    batch before, only the script reads it: one round trip per batch).

    ``write`` must only queue commands on the pipeline: ``execute()``,
    ``watch()``, ``multi()`` or ``reset()`` raise SinkError, and replies are never
    available to it. It is called for each batch not yet applied, also an empty
    one, and must queue the same commands in the same order for the same records
    (a replay relies on it, see below).

    **A command that fails** (e.g. WRONGTYPE on a dead-letter list) does not undo
    the others: Redis has no rollback, and the other commands stay applied,
    exactly once. The script records the failed commands (position and a digest
    of their arguments) in the marker, ``"T epoch=.. ckpt=.. failed=2/3fa1..,.."``,
    and the sink raises SinkError naming each failed command (its number, name,
    arguments and the error). The batch is therefore not committed and *not*
    treated as applied: fix the cause (the key's type, a full memory) and restart
    the job. Its replay of ``T`` runs exactly the recorded failed commands again
    (checking that ``write`` queued the same commands there) and nothing else. To
    give them up deliberately, SET the marker to the value without ``failed=``
    that the error shows. A job that reaches a later batch while the marker still
    records failures refuses to write rather than lose them. Commands Redis
    rejects before running anything (unknown command, wrong number of arguments,
    not allowed in a script) fail the batch with nothing applied.

    **Fencing** (jobs with a checkpoint, see `FencedSink`): the marker also holds
    the driver's claim epoch and checkpoint id (``"T epoch=4 ckpt=<id>"``); a
    driver whose epoch is lower than the marker's for the same checkpoint lost
    the checkpoint to a newer driver, and its write is refused with
    `CheckpointInUseError`, in the same atomic step. A marker holding only a batch
    time (the format of earlier versions) is read as before.

    Connection errors and timeouts are retried ``max_retries`` times with
    exponential backoff from ``retry_backoff_s`` (doubling, at most 2 s); a
    retry re-reads the marker, so a batch whose script ran on Redis before
    the connection dropped is not applied twice. Then SinkError: the batch is
    not committed and runs again after a restart.

    **Redis Cluster.** A script may touch only keys of one hash slot.
    Use a hash tag in the marker key and in every key the write function
    touches, e.g. ``marker_key="{app}:streamkeep:last_batch"`` with data keys
    ``"{app}:user:42"``; the write then lands on one node, which bounds its
    throughput. Connect with a client for that node (``url``), as this sink
    uses a plain ``redis.Redis`` client.

    **With a checkpoint** (`SettlingSink`) ``write`` returns once the batch's
    script is sent, and Redis runs it while the job computes the next batch; the
    scheduler commits the batch only after `settle` read its outcome, and the
    sink sends nothing of a later batch before that (it raises the failure
    instead). Without a checkpoint ``write`` returns with the batch applied.

    The commands travel to the script packed in one msgpack string (per 128 MB, cut between commands),
    which it decodes with the ``cmsgpack`` library Redis bundles in its Lua (2.6
    and later; Valkey too). Arguments are encoded as redis-py encodes them.

    Args:
        url: redis-py URL, e.g. ``"redis://127.0.0.1:6379/0"``.
        write: ``write(pipeline, records)`` queues the batch's commands.
        name: the sink's name; keys the marker, so keep it stable across
            deployments (renaming it makes the next replay apply again).
        marker_key: where the last applied batch time is kept.
        max_retries: retries after a connection error or timeout.
        retry_backoff_s: first backoff between retries.
        timeout_s: socket connect and read timeout.
        write_per_partition: on the Ray executor, call ``write`` once per part of the
            batch, in the worker holding the part's records, with those records (as
            Spark's ``foreachPartition``); every part's commands are staged in Redis and
            applied together with the marker in the one script, so the batch stays
            exactly once. False: ``write`` gets the whole batch in one call, in the
            driver (for a write function that needs every record at once).

    Raises:
        ConfigError: a bad argument, or redis-py is missing.

    Example:
        >>> def write(pipe, records):
        ...     for user, n in records:
        ...         pipe.hincrby("clicks", user, n)
        >>> sink = RedisSink("redis://127.0.0.1:6379/0", write, name="clicks")
        >>> sink.marker_key
        'streamkeep:sink:clicks:last_batch'
    """

    def __init__(
        self,
        url: str,
        write: WriteFunction,
        *,
        name: str,
        marker_key: str | None = None,
        max_retries: int = 5,
        retry_backoff_s: float = 0.1,
        timeout_s: float = 5.0,
        write_per_partition: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = "RedisSink needs a non-empty name= (it keys the sink's batch marker)"
            raise ConfigError(msg)
        if not isinstance(url, str) or "://" not in url:
            msg = f"RedisSink {name!r}: url must be a redis URL like redis://host:6379/0"
            raise ConfigError(msg)
        if not callable(write):
            msg = f"RedisSink {name!r}: write must be a callable(pipeline, records)"
            raise ConfigError(msg)
        if max_retries < 0 or not retry_backoff_s > 0 or not timeout_s > 0:
            msg = f"RedisSink {name!r}: need max_retries >= 0, retry_backoff_s > 0 and timeout_s > 0"
            raise ConfigError(msg)
        self.name = name
        self.url = url
        self.marker_key = marker_key or f"streamkeep:sink:{name}:last_batch"
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.timeout_s = timeout_s
        self.write_per_partition = write_per_partition
        self._write = write
        self._client: Redis | None = None
        self._script: Any = None
        self._staged: Any = None
        self._token: FencingToken | None = None
        self._lock = threading.Lock()
        #: the marker as this sink last left it (a batch time it applied with no failure), else None:
        #: then the next batch is not clearly applied and its marker need not be read before the script
        self._left: BatchTime | None = None
        #: `defer_replies` was called: `write` returns once the batch's script is sent (`settle` reads its reply)
        self._defer = False
        self._sent: _Sent | None = None  # the batch sent and not settled yet
        self._failed: tuple[BatchTime, BaseException] | None = None  # a sent batch that failed: no later one is sent
        self._loaded = False  # the batch script is in the server's cache (deferred sends use EVALSHA alone)

    @staticmethod
    def hset_writer(hash_of: HashOf) -> WriteFunction:
        """A ``write`` function that HSETs one hash per record: the common case, queued faster than by hand.

        ``hash_of(record)`` returns ``(key, mapping)`` or ``(key, [field1, value1, field2, value2,
        ...])`` (a flat ``list`` or ``tuple``, as redis-py's ``hset(key, items=...)`` takes), or None to
        skip the record (no field is skipped too: HSET needs one). Per record, the write function
        queues exactly what ``pipe.hset(key, mapping=mapping)`` (or ``items=``) queues (``HSET key
        f1 v1 f2 v2 ...``, in the mapping's or list's order; values bytes, str, int or float), so
        the batch is applied exactly once as with any write function, and the two forms queue the
        same command for the same fields. In the sink it queues them in one call for the whole
        batch instead of one per command (10k HSETs of 5 fields, queueing alone: ~7 ms of the
        job's thread instead of ~8 ms by hand-written ``pipe.hset`` calls at best, medians ~11 vs
        ~13 ms: ~10-20% less, at load ~3); on any other pipeline (redis-py's, a mock) it calls
        ``pipe.hset(key, mapping=mapping)`` (``items=`` for a flat list). Keep ``hash_of`` lean, it
        runs once per record: the flat list is the cheaper form (no dict per record, nothing to
        pair up: ``hash_of`` and queueing of ``examples/kafka_to_redis.py``, ~10k users per batch,
        ~30% less of the job's CPU than with a dict literal, ``bench/redis_sink.py --breakdown``).
        A flat list of odd length fails the batch with a TypeError, as anything else ``hash_of``
        raises (StopIteration too): nothing is applied.

        Raises:
            ConfigError: `hash_of` is not callable.

        Example:
            >>> write = RedisSink.hset_writer(lambda rec: (f"user:{rec[0]}", {"clicks": rec[1]}))
            >>> flat = RedisSink.hset_writer(lambda rec: (f"user:{rec[0]}", ["clicks", rec[1]]))  # the same HSETs
            >>> sink = RedisSink("redis://127.0.0.1:6379/0", write, name="users")
        """
        return _hset_writer(hash_of)

    def set_fencing_token(self, token: FencingToken) -> None:
        """Fence writes with the driver's claim epoch (kept in the marker)."""
        self._token = token

    def open(self) -> None:
        """Create the client (connections are made on first use)."""
        with self._lock:
            self._ensure_client()

    def close(self) -> None:
        """Close the client's connections; safe to call twice.

        A batch sent and not settled is not waited for: it was not committed, so it is
        replayed (its script ran entirely or not at all; the marker tells which).
        """
        with self._lock:
            client, self._client = self._client, None
            self._script = self._staged = None
            self._left = None
            self._defer, self._failed, self._loaded = False, None, False
            sent, self._sent = self._sent, None
            if sent is not None and sent.conn is not None and client is not None:
                sent.conn.disconnect()
                client.connection_pool.release(sent.conn)
            if client is not None:
                client.close()

    def defer_replies(self) -> None:
        """(`SettlingSink`) From now on `write` returns once its batch is sent; `settle` reads its outcome.

        The scheduler calls it for jobs with a checkpoint, whose commit of each batch
        settles it first: Redis runs batch ``T``'s script while the job computes ``T + 1``.
        """
        with self._lock:
            self._defer = True

    def settle(self, batch_time: BatchTime) -> None:
        """(`SettlingSink`) Wait for the outcome of the batches sent up to `batch_time`; raise a failure.

        Raises:
            SinkError: the batch failed (as `write` would have raised), or Redis stayed unreachable.
            CheckpointInUseError: a newer driver of the checkpoint wrote the marker.
        """
        with self._lock:
            self._settle(batch_time)

    def _settle(self, upto: BatchTime | None = None) -> None:
        """Read the reply of the batch in flight (all, or up to batch `upto`); raise a failed batch's error, every time."""
        failed = self._failed
        if failed is not None and (upto is None or failed[0] <= upto):
            raise failed[1]
        sent = self._sent
        if sent is None or (upto is not None and sent.batch_time > upto):
            return
        self._sent = None
        try:
            reply = self._retrying(f"writing batch {sent.batch_time}", sent.batch_time, lambda: self._reply(sent))
            self._outcome(sent.batch_time, sent.commands, reply)
        except (SinkError, CheckpointInUseError) as exc:
            self._failed, self._left = (sent.batch_time, exc), None
            raise
        except BaseException as exc:  # e.g. an error running the script: its outcome is unknown, no later batch is sent
            msg = (
                f"RedisSink {self.name!r}, batch {sent.batch_time}: reading the outcome of its script failed: "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. The batch is not committed; restart the job (its replay checks the marker)."
            )
            err = SinkError(msg)
            err.__cause__ = exc
            self._failed, self._left = (sent.batch_time, err), None
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like stay what they are
            raise err from exc
        if _text(reply[0]) == "applied":
            self._left = sent.batch_time

    def _reply(self, sent: _Sent) -> Any:
        """The reply of the script `sent` was sent with; after a lost connection, of the script run again.

        Running it again is safe: it checks the marker first (a batch it applied is skipped).
        """
        client = self._ensure_client()
        conn, sent.conn = sent.conn, None
        if conn is not None:
            redis = _import_redis()
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                pass  # the script cache was flushed since it was loaded: run it again (loading it)
            except BaseException:
                conn.disconnect()  # a reply half read, or none: the connection is not reused
                raise
            finally:
                client.connection_pool.release(conn)
        return self._script(keys=[self.marker_key], args=sent.args, client=client)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_script"] = None
        state["_staged"] = None
        state["_lock"] = None
        state["_left"] = None
        state.update(_defer=False, _sent=None, _failed=None, _loaded=False)  # a copy (a worker's) writes synchronously
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _ensure_client(self) -> Redis:
        if self._client is None:
            redis = _import_redis()
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:  # the sink owns retries (and re-checks the marker on each)
                self._client = redis.Redis.from_url(
                    self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 0)
                )
            except ValueError as exc:
                msg = f"RedisSink {self.name!r}: bad url {_redact(self.url)!r}: {exc}"
                raise ConfigError(msg) from exc
            self._script = self._client.register_script(_SCRIPT)
            self._staged = self._client.register_script(_STAGED_SCRIPT)
            self._loaded = False
        assert self._client is not None
        return self._client

    def last_batch(self) -> BatchTime | None:
        """The last batch time applied (or partly applied: see failures) by this sink, or None."""
        with self._lock:
            self._settle()
            raw = self._retrying("reading the marker", None, lambda: self._ensure_client().get(self.marker_key))
        return None if raw is None else self._parse_marker(raw).batch_time

    def _parse_marker(self, raw: Any) -> _Marker:
        m = _MARKER_RE.match(_text(raw))
        if m is None:
            msg = (
                f"RedisSink {self.name!r}: marker key {self.marker_key!r} holds {raw!r}, "
                "not a batch time; another program uses this key? Pick another "
                "marker_key= or delete the key if it is stray."
            )
            raise SinkError(msg)
        epoch = m.group(2)
        return _Marker(int(m.group(1)), int(epoch) if epoch else None, m.group(3), m.group(4))

    def _fenced(self, marker: _Marker, batch_time: BatchTime) -> CheckpointInUseError | None:
        token = self._token
        if token is None or marker.epoch is None or marker.checkpoint_id != token.checkpoint_id or marker.epoch <= token.epoch:
            return None
        msg = (
            f"RedisSink {self.name!r}, batch {batch_time}: marker {self.marker_key!r} was written by a newer driver "
            f"(epoch {marker.epoch}) of this job's checkpoint; this driver (epoch {token.epoch}) lost the checkpoint and "
            "stops without writing."
        )
        return CheckpointInUseError(msg)

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Apply the batch once: skipped if the marker says `batch_time` is applied.

        Raises:
            SinkError: Redis stayed unreachable, a command could not run (nothing applied), or commands
                failed while running (recorded in the marker; the replay runs exactly them again).
            UserFunctionError: the write function raised (nothing was applied).
        """
        with self._lock:
            self._settle()  # the batch in flight first: none is sent past a failed one
            try:
                self._retrying(f"writing batch {batch_time}", batch_time, lambda: self._apply(batch_time, records))
            except BaseException:
                self._left = None
                raise

    def _retrying(self, what: str, batch_time: BatchTime | None, fn: Callable[[], Any]) -> Any:
        redis = _import_redis()

        def give_up(exc: BaseException, attempt: int, _delay_s: float) -> BaseException | None:
            if attempt <= self.max_retries:
                return None
            tail = "; the batch is not committed and runs again after a restart" if batch_time is not None else ""
            msg = (
                f"RedisSink {self.name!r}: {what} failed: cannot reach Redis at "
                f"{_redact(self.url)} after {attempt} attempt(s): {str(exc).rstrip('.')}. Check "
                f"that the server is up and reachable{tail}."
            )
            return SinkError(msg)

        def on_retry(exc: BaseException, attempt: int, delay_s: float) -> None:
            log.warning("RedisSink %r: %s failed (attempt %d/%d), retrying in %.2f s: %s", self.name, what, attempt, self.max_retries + 1, delay_s, exc)

        return retry_with_backoff(
            fn, retry_on=(redis.ConnectionError, redis.TimeoutError), first_s=self.retry_backoff_s, give_up=give_up, on_retry=on_retry
        )

    def _queue(self, batch_time: BatchTime, records: list[Any]) -> _Commands:
        """Run the write function on a queue-only pipeline; the commands it queued."""
        client = self._ensure_client()
        pipe = client.pipeline(transaction=True)
        guarded = ("execute", "watch", "multi", "unwatch", "reset", "discard")

        def refuse(name: str) -> Callable[..., Any]:
            def call(*_a: Any, **_k: Any) -> Any:
                msg = (
                    f"RedisSink {self.name!r}, batch {batch_time}: the write function called {name}() on the pipeline; it "
                    "must only queue commands (the sink runs them together with its marker). Nothing was applied."
                )
                raise SinkError(msg)

            return call

        for name in guarded:
            setattr(pipe, name, refuse(name))
        argcs: list[int] = []
        args: list[Any] = []
        queueing = _queueing(pipe, argcs, args)
        for name, method in queueing.items():
            setattr(pipe, name, method)  # instance attributes over the methods
        try:
            try:
                self._write(pipe, records)
            except SinkError:
                raise
            except Exception as exc:
                err = user_function_error(
                    "", exc, batch_time, f"RedisSink {self.name}", detail="; nothing was applied", subject=f"RedisSink {self.name!r}: the write function"
                )
                raise err from exc
        finally:
            for name in (*guarded, *queueing):
                delattr(pipe, name)
            pipe.reset()
        if argcs and not min(argcs):  # checked at C speed
            msg = f"RedisSink {self.name!r}, batch {batch_time}: command #{argcs.index(0) + 1} has no command name. Nothing was applied."
            raise SinkError(msg)
        commands = _Commands(argcs, args)
        try:
            heads = set(map(args.__getitem__, commands.starts()[:-1]))  # a batch has a few command names: checked at C speed
        except TypeError:  # an unhashable name (_pack names it)
            heads = {" "}
        if any(isinstance(head, str) and " " in head for head in heads):  # redis-py sends "CLIENT LIST"-style names as separate words
            words: list[tuple[Any, ...]] = []
            for cmd in commands:
                head = cmd[0]
                words.append((*head.split(), *cmd[1:]) if isinstance(head, str) and " " in head else cmd)
            commands = _Commands(list(map(len, words)), list(chain.from_iterable(words)))
        return commands

    def _apply(self, batch_time: BatchTime, records: list[Any]) -> None:
        client = self._ensure_client()
        left, self._left = self._left, None
        # A later batch than the one this sink just applied is not applied yet, unless another driver
        # wrote meanwhile: the script checks that atomically anyway, so one round trip less per batch.
        raw = client.get(self.marker_key) if left is None or batch_time <= left else None
        if raw is not None:
            marker = self._parse_marker(raw)
            fenced = self._fenced(marker, batch_time)
            if fenced is not None:
                raise fenced
            if marker.batch_time > batch_time or (marker.batch_time == batch_time and not marker.failed):
                log.info("RedisSink %r: batch %d already applied (marker %s); skipped", self.name, batch_time, _text(raw))
                return
        # Every command tuple the write function queues stays alive until the batch is applied: collections
        # meanwhile would free nothing and only walk the heap (~0.13 s of the sink's ~1 s CPU in bench/kafka.py).
        with gc_paused():  # the batch's commands are all freed before the collector runs again
            status = self._run_batch(client, batch_time, records)
        if status == "applied":  # with no failure, else _run_batch raised
            self._left = batch_time

    def _run_batch(self, client: Redis, batch_time: BatchTime, records: list[Any]) -> str:
        """Queue the batch's commands and run them with the marker in the batch script; its status, or what it reports raised."""
        commands = self._queue(batch_time, records)
        token = self._token
        header: list[Any] = [batch_time, "" if token is None else token.epoch, "" if token is None else token.checkpoint_id, len(commands)]
        args = [*header, *self._pack(batch_time, commands)]
        if self._defer:  # `settle` (or the next write) reads the reply
            self._send(client, batch_time, args, commands)
            return "sent"
        reply = self._script(keys=[self.marker_key], args=args, client=client)
        self._outcome(batch_time, commands, reply)
        return _text(reply[0])

    def _send(self, client: Redis, batch_time: BatchTime, args: list[Any], commands: _Commands) -> None:
        """Send the batch script on a connection of its own, not waiting for the reply (`_sent`)."""
        if not self._loaded:
            client.script_load(_SCRIPT)  # EVALSHA finds it (a cache flushed since: `_reply` runs it again)
            self._loaded = True
        pool = client.connection_pool
        conn: Any = pool.get_connection()  # no command name: redis-py >= 5.3 (pyproject)
        try:
            conn.send_command("EVALSHA", _SCRIPT_SHA, 1, self.marker_key, *args)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self._sent = _Sent(batch_time, args, commands, conn)

    def _pack(self, batch_time: BatchTime, commands: _Commands) -> list[bytes]:
        """The commands as the batch script's ``ARGV[5..]``: msgpack ``[argcs, args]``, one part unless huge.

        Each argument reaches Redis as redis-py would send it: str as UTF-8, bytes as they
        are, int and float as their ``repr``. The script reads them from one string per part
        (``cmsgpack.unpack``), not one script argument each: for a batch of 10k HSETs (106k
        arguments) that costs the client ~25 ms instead of ~45 ms (hiredis packing each
        argument), and the server ~12 ms to decode instead of ~20 ms to parse them. Measured
        again on an idler machine: this ~5 ms, ``hiredis.pack_command`` of the same EVALSHA with
        the arguments in ARGV ~14 ms, redis-py's ``pack_command`` ~27 ms; redis-server ~6 ms
        decoding of its ~31 ms for the whole script.

        Native commands in MULTI/EXEC instead of the script (the same 10k-HSET batches, 25 each,
        on a loaded machine): redis-server's CPU ~26 ms instead of ~33 ms (least), but the
        client's ~53 ms instead of ~13 ms (median: hiredis packing each command, reading 10k
        replies), and the client is the busier side (the job's own thread). Nor could a command
        that fails inside EXEC be recorded in the marker in the same atomic step, as the script does.
        """
        argcs = commands.argcs
        if argcs and max(argcs) > MAX_COMMAND_ARGS:
            i = next(i for i, argc in enumerate(argcs) if argc > MAX_COMMAND_ARGS)
            msg = (
                f"RedisSink {self.name!r}, batch {batch_time}: command #{i + 1} ({_show(commands[i])}) has {argcs[i]} arguments; "
                f"the sink runs a batch's commands in a Lua script, which takes at most {MAX_COMMAND_ARGS} per "
                "command. Split it into several commands. Nothing was applied."
            )
            raise SinkError(msg)
        args = commands.args
        types = set(map(type, args))
        if int in types and types <= _TEXT_INT:
            # ints as msgpack ints, which the script writes in decimal (flag 1): no str per int here. Only
            # ints of 32 bits or less (exact in Lua's doubles); a 64-bit one is packed with a byte of
            # _WIDE_INT, and so may be a byte of text: then all go as text (slower, the same result).
            try:
                numbers: bytes | None = _packb([argcs, args, 1])
            except (OverflowError, ValueError):  # past 64 bits, or a str msgpack cannot encode (named below)
                numbers = None
            if numbers is not None and len(numbers) <= _PART_BYTES and not any(b in numbers for b in _WIDE_INT):
                return [numbers]
        if not types <= _TEXT:
            # format(x, "") is str(x): exact str as it is, exact int and float as their repr, at C speed
            args = list(map(format, args)) if types <= _PLAIN else self._plain_args(batch_time, commands)
        try:
            packed = _packb([argcs, args])
        except ValueError:  # a str msgpack cannot encode (lone surrogates): name the command
            self._plain_args(batch_time, commands, check_text=True)
            raise
        if len(packed) <= _PART_BYTES:
            return [packed]
        return self._parts(batch_time, commands, argcs, args)

    def _parts(self, batch_time: BatchTime, commands: _Commands, argcs: list[int], args: list[Any]) -> list[bytes]:
        """A huge batch's commands packed in parts of at most `_PART_BYTES` each, cut by their bytes.

        A command bigger than that goes alone in its part; one bigger than `_BULK_LIMIT` (what
        Redis takes in one argument) is refused, naming it, before anything is sent.
        """
        # what each argument packs to, at most (5: the longest msgpack header of a raw string)
        sizes = [len(a) + 5 if type(a) is bytes else len(a.encode("utf-8", "surrogatepass")) + 5 for a in args]
        ends = list(accumulate(argcs))
        cum = [0, *accumulate(sizes)]
        out: list[bytes] = []
        lo, part = 0, 0  # the part's first command; its bytes so far
        for i, end in enumerate(ends):
            size = cum[end] - cum[end - argcs[i]] + 10  # its arguments, their count and the part's array headers
            if size > _BULK_LIMIT:
                msg = (
                    f"RedisSink {self.name!r}, batch {batch_time}: command #{i + 1} ({_show(commands[i])}) packs to "
                    f"{size / 2**20:.1f} MiB; Redis takes at most {_BULK_LIMIT / 2**20:.1f} MiB in one argument "
                    "(proto-max-bulk-len), and the sink sends a command in one. Split its value. Nothing was applied."
                )
                raise SinkError(msg)
            if part and part + size > _PART_BYTES:
                start = ends[lo - 1] if lo else 0
                out.append(_packb([argcs[lo:i], args[start : ends[i - 1]]]))
                lo, part = i, 0
            part += size
        start = ends[lo - 1] if lo else 0
        out.append(_packb([argcs[lo:], args[start:]]))
        return out

    def _plain_args(self, batch_time: BatchTime, commands: _Commands, *, check_text: bool = False) -> list[Any]:
        """The commands' arguments as str or bytes, as redis-py encodes them; SinkError naming the command with one it refuses.

        bytearray and memoryview as bytes; int and float subclasses (but bool) as their
        ``repr``; str subclasses as str. With `check_text`, also a str that is not UTF-8
        encodable (lone surrogates).
        """
        out: list[Any] = []
        append = out.append
        for i, cmd in enumerate(commands, 1):
            for a in cmd:
                t = type(a)
                if t is str or t is bytes:
                    if check_text and t is str:
                        try:
                            a.encode("utf-8")
                        except UnicodeEncodeError as exc:
                            msg = (
                                f"RedisSink {self.name!r}, batch {batch_time}: command #{i} ({_show(cmd)}) has a str argument "
                                f"that is not valid UTF-8 ({exc.reason}: {a!r:.40}); pass bytes or fix the text in the write "
                                "function. Nothing was applied."
                            )
                            raise SinkError(msg) from exc
                    append(a)
                elif t is int or t is float:
                    append(repr(a))
                elif isinstance(a, (bytearray, memoryview)):
                    append(bytes(a))
                elif isinstance(a, str):
                    append(str.__str__(a))
                elif isinstance(a, (int, float)) and not isinstance(a, bool):
                    append(repr(a))
                else:
                    msg = (
                        f"RedisSink {self.name!r}, batch {batch_time}: command #{i} ({_show(cmd)}) has an argument of type "
                        f"{type(a).__name__} ({a!r:.40}); Redis takes bytes, str, int or float: convert it in the write "
                        "function. Nothing was applied."
                    )
                    raise SinkError(msg)
        return out

    # -- in parts, where the records are (PartitionWritable) -------------------------------

    def partition_writable(self) -> bool:
        """``write_per_partition``: on Ray, ``write`` runs per part in the worker holding its records."""
        return self.write_per_partition

    def _stage_key(self, batch_time: BatchTime, attempt: str, index: int) -> str:
        return f"{self.marker_key}:stage:{batch_time}:{attempt}:{index}"  # the marker's hash tag comes first: same slot

    def write_part(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> int:
        """Run ``write`` on part `index`'s records (a worker) and stage its commands in Redis; returns their number.

        Staged commands do nothing until `publish` runs them with the marker, in one script.

        Raises:
            SinkError: Redis stayed unreachable, or a command is too long.
            UserFunctionError: the write function raised (nothing was applied).
        """
        try:
            with self._lock:
                return int(self._retrying(f"staging part {index} of batch {batch_time}", batch_time, lambda: self._stage(batch_time, attempt, index, records)))
        finally:
            self.close()  # a worker's copy of the sink: its connection goes with the part

    def _stage(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> int:
        client = self._ensure_client()
        raw = client.get(self.marker_key)
        if raw is not None:
            marker = self._parse_marker(raw)
            if marker.batch_time > batch_time or (marker.batch_time == batch_time and not marker.failed):
                return 0  # applied already: `publish` skips the batch
        commands = self._queue(batch_time, records)
        key = self._stage_key(batch_time, attempt, index)
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        flat: list[Any] = []
        for cmd in commands:
            flat.append(len(cmd))
            flat.extend(cmd)
            if len(flat) >= _RPUSH_ARGS:
                pipe.rpush(key, *flat)
                flat = []
        if flat:
            pipe.rpush(key, *flat)
        pipe.expire(key, STAGE_TTL_S)
        pipe.execute()
        return len(commands)

    def publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        """Apply every part's staged commands and the marker in one script, exactly once, as `write` does.

        Raises:
            SinkError: Redis stayed unreachable, a part's commands are gone, or commands failed.
            CheckpointInUseError: a newer driver of the checkpoint wrote the marker.
        """
        with self._lock:
            self._settle()
            self._retrying(f"writing batch {batch_time}", batch_time, lambda: self._publish(batch_time, attempt, receipts))

    def _publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        client = self._ensure_client()
        keys = [self._stage_key(batch_time, attempt, i) for i, n in enumerate(receipts) if n]
        token = self._token
        args: list[Any] = [batch_time, "" if token is None else token.epoch, "" if token is None else token.checkpoint_id, sum(receipts)]
        reply = self._staged(keys=[self.marker_key, *keys], args=args, client=client)
        status = _text(reply[0])
        if status == "staged":
            msg = (
                f"RedisSink {self.name!r}, batch {batch_time}: {int(reply[2])} commands were staged by the parts but "
                f"{int(reply[1])} are left in Redis (expired after {STAGE_TTL_S} s, or evicted?). Nothing of the batch was "
                "applied; restart the job (the batch is not committed and runs again)."
            )
            raise SinkError(msg)
        if status == "skip" or (status == "applied" and not int(reply[2])):
            self._outcome(batch_time, [], reply)
            return
        try:  # an error to report: its message shows the commands, read back from the staging lists
            commands: list[tuple[Any, ...]] = []
            for key in keys:
                flat = client.lrange(key, 0, -1)
                pos = 0
                while pos < len(flat):
                    argc = int(flat[pos])
                    commands.append(tuple(flat[pos + 1 : pos + 1 + argc]))
                    pos += argc + 1
            self._outcome(batch_time, commands, reply)
        finally:
            if keys:
                client.delete(*keys)

    def _outcome(self, batch_time: BatchTime, commands: Sequence[tuple[Any, ...]], reply: list[Any]) -> None:
        status = _text(reply[0])
        where = f"RedisSink {self.name!r}, batch {batch_time}"
        if status == "skip":
            log.info("RedisSink %r: batch %d already applied (marker %s); skipped", self.name, batch_time, _text(reply[1]))
            return
        if status == "foreign":
            self._parse_marker(reply[1])  # raises
        marker = _text(reply[1]) if len(reply) > 1 else ""
        give_up = f"SET {self.marker_key} {marker.split(' failed=')[0]!r}"
        if status == "fenced":
            fenced = self._fenced(self._parse_marker(reply[1]), batch_time)
            assert fenced is not None
            raise fenced
        if status == "malformed":
            i, why = int(reply[1]), _text(reply[2])
            msg = (
                f"{where}: Redis cannot run command #{i} ({_show(commands[i - 1])}): {why}. Nothing of the batch was "
                "applied; fix the write function and restart (the batch is not committed)."
            )
            raise SinkError(msg)
        if status == "blocked":
            msg = (
                f"{where}: marker {self.marker_key!r} is {marker!r}: commands of batch {self._parse_marker(reply[1]).batch_time} "
                "failed and were never re-applied, and this job is past that batch, so they would be lost. Run the job "
                "from the checkpoint that still holds that batch (its replay re-runs them), or give them up deliberately: "
                f"{give_up}."
            )
            raise SinkError(msg)
        if status == "changed":
            i, n = int(reply[2]), int(reply[3])
            shown = _show(commands[i - 1]) if i <= len(commands) else f"none: only {n} commands were queued"
            msg = (
                f"{where}: the marker records command #{i} of this batch as failed, but the write function now queues a "
                f"different command there ({shown}); re-running it could apply something else than what failed. Restore "
                f"the write function that ran this batch, or give the failed commands up deliberately: {give_up}."
            )
            raise SinkError(msg)
        n_failed, n_run, errs = int(reply[2]), int(reply[3]), reply[4]
        if not n_failed:
            return
        shown = "; ".join(
            f"command #{int(errs[k])} {_show(commands[int(errs[k]) - 1])}: {_text(errs[k + 1]).rstrip('.')}" for k in range(0, len(errs), 2)
        )
        more = f" (and {n_failed - len(errs) // 2} more)" if n_failed > len(errs) // 2 else ""
        msg = (
            f"{where}: {n_failed} of {n_run} commands failed in Redis: {shown}{more}. Redis does not roll back: the other "
            f"commands were applied, exactly once. The failed ones are recorded in the marker {self.marker_key!r}, so the "
            "batch is not committed and not treated as applied: fix the cause (e.g. the key's type) and restart the job; "
            f"its replay of batch {batch_time} runs exactly those commands again, nothing else. To give them up "
            f"instead: {give_up}"
        )
        raise SinkError(msg)

"""`StreamingContext`: sources, the batch clock, start/stop, and `get_or_create`."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import difflib
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streamkeep._clock import WallClock
from streamkeep._exit_status import interactive, request_failed_exit
from streamkeep._util import Duration, check_partitions, duration_ms, stopped_by_sigterm
from streamkeep.checkpoint import Checkpoint
from streamkeep.dstream._dstream import DStream
from streamkeep.dstream._graph import KNOWN_CODECS, Graph, SourceNode, check_on_error
from streamkeep.errors import ConfigError, StreamkeepError
from streamkeep.executors import LocalExecutor
from streamkeep.executors.base import Executor
from streamkeep.scheduler import BatchInfo, Scheduler
from streamkeep.scheduler._events import ErrorInfo, JobStopped, batch_extra, emit, iso_ms
from streamkeep.scheduler._observe import job_started
from streamkeep.sources.base import DeadLettering, Source

log = logging.getLogger("streamkeep")

#: Set by `streamkeep run` for the script it runs: (ui_port, ui_host, scan for a free port from ui_port,
#: hook called as hook(ssc, scheduler) when a context starts). A context created without ui_port uses it.
RUN_DEFAULTS: contextvars.ContextVar[tuple[int | None, str, bool, Callable[[Any, Any], None] | None] | None] = contextvars.ContextVar(
    "streamkeep_run_defaults", default=None
)

#: Set by `streamkeep run --executor NAME`: the executor of the contexts the script creates without one.
RUN_EXECUTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("streamkeep_run_executor", default=None)

#: Set by `streamkeep run` to a list: a Ctrl-C that `await_termination` turned into a clean stop is noted
#: there ("SIGINT"), so the command still exits 130. Python's SIGINT handler stays in place (asyncio.run,
#: trio and the like install their own); a Ctrl-C raised out of the script is seen as KeyboardInterrupt.
RUN_INTERRUPTS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("streamkeep_run_interrupts", default=None)

#: At interpreter exit, how long the stop of a context that ran `run()` and was never stopped waits for a
#: snapshot merge in flight (`StreamingContext._stop_at_exit`). A merge of 1M keys takes ~1-2 s (bench/stop_snapshot.py);
#: past this bound the merge is dropped (a restart reads the longer chain, which is whole) rather than the exit hanging.
EXIT_MERGE_WAIT_S = 30.0


def exit_deadline() -> float:
    """A deadline (on `time.monotonic`) `EXIT_MERGE_WAIT_S` from now: one for all the jobs an exit stops (`_stop_at_exit`)."""
    return time.monotonic() + EXIT_MERGE_WAIT_S


class _ExitDeadline:
    """The one deadline of this process's exit: every context's at-exit stop waits until it at most.

    Each context that ran `run()` registers its own at-exit stop; with a deadline each, N such
    contexts could hold the exit N x `EXIT_MERGE_WAIT_S`. The first stop to run sets it, the
    others keep it. Process-wide state by nature (the exit is one): set only at the exit, reset in a forked child.
    """

    at: float | None = None
    pid = 0

    @classmethod
    def get(cls) -> float:
        """The exit's deadline, set `EXIT_MERGE_WAIT_S` from now at the first call in this process."""
        if cls.at is None or cls.pid != os.getpid():
            cls.at, cls.pid = exit_deadline(), os.getpid()
        return cls.at


class JobHeld(BaseException):
    """Raised, under `hold_jobs`, where a job would start running: its setup code stops there.

    A BaseException so that a script's ``except Exception`` does not swallow it.
    """


class HeldJobs:
    """The contexts a job's code creates under `hold_jobs` (none of them runs)."""

    def __init__(self) -> None:
        self.created: list[StreamingContext] = []
        self.started: list[StreamingContext] = []
        self.via_get_or_create: list[StreamingContext] = []

    def job(self) -> StreamingContext | None:
        """The job's context: the last that would have started, else the last `get_or_create` returned,
        else the last with an output, else the last created (None if none was)."""
        with_outputs = [c for c in self.created if c._graph.outputs()]
        for group in (self.started, self.via_get_or_create, with_outputs, self.created):
            if group:
                return group[-1]
        return None


_HOLD: contextvars.ContextVar[HeldJobs | None] = contextvars.ContextVar("streamkeep_hold_jobs", default=None)


@contextlib.contextmanager
def hold_jobs() -> Iterator[HeldJobs]:
    """Build jobs without running them (``streamkeep checkpoint diff`` builds a job's graph this way).

    Inside the block, every `StreamingContext` created is recorded; `run`, `start` and
    `await_termination` raise `JobHeld` instead of running; `get_or_create` calls
    ``setup()`` and returns its context without opening the checkpoint (the context takes
    the checkpoint URL if it has none). Nothing is claimed, read or written.

    Example:
        >>> with hold_jobs() as held:
        ...     try:
        ...         setup_and_run()  # the job's code: builds a context, then starts it
        ...     except JobHeld:
        ...         pass
        >>> graph = held.job()._graph.describe()  # doctest: +SKIP
    """
    held = HeldJobs()
    token = _HOLD.set(held)
    try:
        yield held
    finally:
        _HOLD.reset(token)


def _wait_waking(wait: Callable[[float], bool], timeout: float | None) -> bool:
    """``wait(timeout)`` in steps of at most 0.2 s; True once `wait` returned True.

    The kernel may deliver a Ctrl-C (SIGINT) to any thread, and Python runs its handler only
    when the main thread runs Python code again: an untimed wait in the main thread would
    then sleep through it (the job's background threads make that likely).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        if wait(step):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _caller_site() -> str:
    """``file:line`` of the first caller outside streamkeep (e.g. a script's ``ssc.start()``): for messages naming the job."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "streamkeep":
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _as_checkpoint_url(value: Any, where: str) -> str:
    """A checkpoint argument as a URL string (a path object is taken as its path); ConfigError otherwise."""
    url = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(url, str) or not url:
        msg = (
            f"{where}: checkpoint must be a directory path or fsspec URL as a str (e.g. 'ckpt/' or "
            f"'s3://bucket/jobs/x') or a pathlib.Path, got {value!r}"
        )
        raise ConfigError(msg)
    return url


def _same_checkpoint(a: str, b: str) -> bool:
    """Whether two checkpoint URLs name the same place (``ckpt``, ``ckpt/``, ``./ckpt``, its absolute path and a symlink to it do)."""

    def norm(url: str) -> str:
        if "://" in url and not url.startswith("file://"):
            return url.rstrip("/")
        return os.path.realpath(url.removeprefix("file://"))  # symlinks resolved: `link/..` is where the link points

    return a == b or norm(a) == norm(b)


def _hold_here(ssc: StreamingContext) -> None:
    held = _HOLD.get()
    if held is not None:
        held.started.append(ssc)
        raise JobHeld


class StreamingContext:
    """The entry point of a streaming job: create sources, then start or run.

    Args:
        batch_interval: seconds (float) or a timedelta; one batch per interval.
        checkpoint: the checkpoint: a local directory (str or pathlib.Path) or fsspec URL (None: no durability).
        executor: "local" (embedded, the default; ``streamkeep run --executor`` may set another); "processes" or ``LocalExecutor(processes=N)``
            to run chains of per-record operators in worker processes (pays off only for
            CPU-heavy functions: see bench/process_pool.py); "ray" or ``RayExecutor(...)`` to
            split keyed state over Ray actors (docs/ray.md; ``pip install streamkeep[ray]``); or any object implementing
            `streamkeep.executors.base.Executor`, which then runs the job's graph.
        clock: None for wall-clock time; `streamkeep.testing.ManualClock()` in tests.
        snapshot_every: write a full state snapshot every N batches; other batches
            write only the keys that changed. Default (None): adaptive, a snapshot once
            the deltas since the last one reach half its size (the first after 20
            batches, at most 500 batches apart), so checkpoint bytes per batch follow
            the keys that changed, not the size of the state.
        codec: default codec of stateful operators ("msgpack"; "pickle" by opt-in).
        storage_options: fsspec options for the checkpoint URL (e.g. S3 endpoint).
        allow_state_loss: names (a collection, e.g. ``{"counts"}``) of stateful operators whose
            checkpointed state, and of sources whose stored position, may be dropped when the code
            no longer matches it (renamed, removed or reshaped); each then starts empty (a source
            from its configured start). Any other mismatch is an `IncompatibleCheckpointError`.
        keep_commits: how many recent commits (and the files they need) retention keeps (at least 2;
            1 keeps 2): recovery can fall back to the older ones if the newest is damaged or lost.
        lease_timeout_s: on remote storage, how long a silent driver keeps its claim.
        inline_delta_bytes: small deltas ride inside the commit record (one file and one
            fsync/PUT per batch instead of one more per stateful operator) while an
            operator's inline deltas since its snapshot total at most this many bytes
            (every commit record repeats them, so keep it small); 0 writes every delta
            to a file of its own.
        on_error: what a record does when the function of a per-record operator (map,
            flat_map, filter, map_values, flat_map_values, map_with_state) raises on it:
            "fail" (default: the batch fails with UserFunctionError and the job stops), or
            a sink that dead-letters it (``{"operator", "batch_time_ms", "record", "error"}``
            dicts, written with the batch time, exactly once like any sink) while the batch
            goes on without it. Each of those operators may override it with ``on_error=``.
        ui_port: serve the dashboard, ``/metrics`` (Prometheus), ``/api/status`` and
            ``/healthz`` on this port once the job starts: None (default) no server,
            0 any free port, N that port. See `ui_url`. Needs the ``ui`` extra.
        ui_host: the address the dashboard binds (default loopback only).

    Example:
        >>> import streamkeep as sk
        >>> ssc = sk.StreamingContext(1.0)
        >>> counts = ssc.queue_stream([["a b", "b"]], name="lines").flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(lambda a, b: a + b)
        >>> counts.foreach_batch(lambda batch: print(sorted(batch.collect())))
        >>> ssc.run()
        [('a', 1), ('b', 2)]
    """

    def __init__(
        self,
        batch_interval: Duration,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        executor: str | Executor | None = None,
        clock: Any = None,
        snapshot_every: int | None = None,
        codec: str = "msgpack",
        storage_options: dict[str, Any] | None = None,
        allow_state_loss: Iterable[str] = (),
        keep_commits: int = 2,
        lease_timeout_s: float = 10.0,
        inline_delta_bytes: int = 4 * 1024,
        on_error: Any = "fail",
        ui_port: int | None = None,
        ui_host: str = "127.0.0.1",
    ) -> None:
        interval = duration_ms(batch_interval, "batch_interval")
        self._executor: Executor
        if executor is None:  # `streamkeep run --executor` decides, else the local one
            executor = RUN_EXECUTOR.get() or "local"
        if isinstance(executor, Executor):
            self._executor = executor
        elif executor == "local":
            self._executor = LocalExecutor()
        elif executor == "processes":
            self._executor = LocalExecutor(os.cpu_count() or 2)
        elif executor == "ray":
            from streamkeep.executors.ray import RayExecutor

            self._executor = RayExecutor()  # ConfigError naming the pip extra when Ray is missing
        else:
            what = "is not available" if isinstance(executor, str) else "is not an Executor"
            msg = (
                f"executor {executor!r} {what}; use 'local' (embedded, the default), 'processes' "
                f"(per-record operators in a process pool, for CPU-heavy functions), LocalExecutor(processes=N), "
                f"'ray' or RayExecutor(address=..., num_partitions=...) (keyed state in Ray actors), "
                f"or an object implementing streamkeep.executors.base.Executor"
            )
            raise ConfigError(msg)
        if codec not in KNOWN_CODECS:
            msg = f"unknown codec {codec!r}; use one of {', '.join(KNOWN_CODECS)}"
            raise ConfigError(msg)
        if snapshot_every is not None and (not isinstance(snapshot_every, int) or snapshot_every < 1):
            msg = f"snapshot_every must be a positive int, got {snapshot_every!r}"
            raise ConfigError(msg)
        if not isinstance(keep_commits, int) or isinstance(keep_commits, bool) or keep_commits < 1:
            msg = f"keep_commits must be a positive int (how many recent commits retention keeps; at least 2 are), got {keep_commits!r}"
            raise ConfigError(msg)
        if not isinstance(lease_timeout_s, (int, float)) or isinstance(lease_timeout_s, bool) or not 0 < lease_timeout_s < float("inf"):
            msg = f"lease_timeout_s must be a positive number of seconds (how long a silent driver keeps its claim), got {lease_timeout_s!r}"
            raise ConfigError(msg)
        if ui_port is not None and (not isinstance(ui_port, int) or isinstance(ui_port, bool) or not 0 <= ui_port <= 65535):
            msg = f"ui_port must be None (no dashboard), 0 (any free port) or a port number, got {ui_port!r}"
            raise ConfigError(msg)
        run_defaults = RUN_DEFAULTS.get()
        self._ui_scan = False
        self._run_hook: Callable[[Any, Any], None] | None = None
        if run_defaults is not None:
            if ui_port is None:
                ui_port, ui_host, self._ui_scan = run_defaults[0], run_defaults[1], run_defaults[2]
            self._run_hook = run_defaults[3]
        self._ui_port = ui_port
        self._ui_host = ui_host
        self._ui: Any = None
        self._announced = False
        self._failed = False
        check_on_error(on_error, "StreamingContext")
        self._graph = Graph(interval, default_codec=codec, default_on_error=on_error)
        self._checkpoint_url = None if checkpoint is None else _as_checkpoint_url(checkpoint, "StreamingContext")
        self._storage_options = storage_options
        if clock is not None and not (callable(getattr(clock, "now_ms", None)) and callable(getattr(clock, "wait_until", None))):
            msg = f"clock must be None (wall-clock time) or a clock such as streamkeep.testing.ManualClock(), got {clock!r:.60}"
            raise ConfigError(msg)
        self._clock = clock if clock is not None else WallClock()
        self._snapshot_every = snapshot_every
        if isinstance(allow_state_loss, str):  # frozenset("counts") would allow dropping 'c', 'o', ...
            msg = f"allow_state_loss must be a collection of names, got the string {allow_state_loss!r}: pass {{{allow_state_loss!r}}}"
            raise ConfigError(msg)
        self._allow_state_loss = frozenset(allow_state_loss)
        self._keep_commits = keep_commits
        self._lease_timeout_s = lease_timeout_s
        self._inline_delta_bytes = inline_delta_bytes
        self._resume = False
        self._scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._wait_timed_out = False  # an await_termination(timeout) returned with the job still running (the at-exit warning)
        self._stop_event = threading.Event()
        self._error: BaseException | None = None  # a background failure not yet raised to the program
        self._awaiting = 0  # threads waiting in await_termination (they get a failure raised: no traceback logged); under _wait_lock
        self._wait_lock = threading.Lock()
        self._started_at = ""  # file:line of the start() call (named by the at-exit messages)
        self._started_pid = 0  # the process that called start(): a forked child's exit is not the job's
        self._run_pid = 0  # the process that called run(): its exit stops the job (`_stop_at_exit`), a forked child's does not
        self._exit_deadline: float | None = None  # set by `_stop_at_exit` before it stops the job: a run() thread's stop keeps it too
        self._done = threading.Event()
        self._state = "initialized"
        self._listeners: list[Any] = []
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # held by run() while it runs batches
        self._run_thread: threading.Thread | None = None
        if (held := _HOLD.get()) is not None:
            held.created.append(self)

    # -- configuration ---------------------------------------------------------

    @property
    def batch_interval_ms(self) -> int:
        """The batch interval in ms."""
        return self._graph.batch_interval_ms

    @property
    def checkpoint_url(self) -> str | None:
        """The checkpoint URL, if any."""
        return self._checkpoint_url

    @property
    def state(self) -> str:
        """"initialized", "active" or "stopped"."""
        return self._state

    def checkpoint(self, url: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> None:
        """Set the checkpoint URL (as Spark's ``ssc.checkpoint(dir)``)."""
        self._require_state("checkpoint()", "initialized")
        self._checkpoint_url = _as_checkpoint_url(url, "checkpoint()")
        if storage_options is not None:
            self._storage_options = storage_options

    def add_listener(self, listener: Any) -> None:
        """Register a listener: an object with any of the `streamkeep.StreamingListener` callbacks.

        ``on_batch_completed(info: BatchInfo)`` is called after each batch and
        ``on_batch_started(info)`` once the batch's input is read; see `StreamingListener`
        for the others (job started/stopped, batch planned, snapshot completed, batch
        replayed, error). A listener's exception is logged, never raised.
        """
        self._listeners.append(listener)
        if self._scheduler is not None:
            self._scheduler.listeners.append(listener)

    def _require_state(self, what: str, *allowed: str) -> None:
        if self._state not in allowed:
            msg = f"{what} is not allowed: the context is {self._state}"
            if self._state == "stopped":
                msg += " (a stopped context cannot be restarted: build a new one, e.g. with get_or_create on the same checkpoint)"
            raise ConfigError(msg)

    # -- sources ---------------------------------------------------------------

    def add_source(self, source: Source) -> DStream[Any]:
        """Use a custom `Source` (see streamkeep.sources.base)."""
        self._require_state("adding a source", "initialized")
        for attr in ("name", "plan", "read", "open", "restore", "position"):
            if not hasattr(source, attr):
                msg = f"{source!r} is not a Source: it lacks {attr!r} (see streamkeep.sources.base.Source)"
                raise ConfigError(msg)
        g = self._graph
        if any(isinstance(n, SourceNode) and n.source.name == source.name for n in g.nodes):
            msg = f"add_source: the job already has a source named {source.name!r}; source names must be unique"
            raise ConfigError(msg)
        if not isinstance(source.name, str) or source.name not in g.source_names:  # a custom source: reserve its name
            if not isinstance(source.name, str) or not source.name:
                msg = f"add_source: a source's name must be a non-empty string, got {source.name!r}"
                raise ConfigError(msg)
            g.source_name("add_source", source.name)
        if isinstance(source, DeadLettering) and source.dead_letter_sink is not None:  # a sink of the job like any other
            g.register_sink(source.dead_letter_sink, f"source {source.name!r}: on_error")
        node = g.add(SourceNode, op="source", parents=(), slide_ms=g.batch_interval_ms, source=source)
        return DStream(g, node)

    def queue_stream(
        self,
        batches: Iterable[Iterable[Any]],
        *,
        one_at_a_time: bool = True,
        default: Iterable[Any] | None = None,
        name: str | None = None,
        num_partitions: int = 1,
        partitioned: bool = False,
    ) -> DStream[Any]:
        """Each item of `batches` is one batch's records.

        With a checkpoint, each planned batch is materialised into the checkpoint so
        that a replay reads the same records (they must be msgpack-storable).
        With ``partitioned=True`` each item (and `default`) is a list of partitions
        instead, kept as they are (see `streamkeep.sources.queue.QueueSource`).
        """
        from streamkeep.sources.queue import QueueSource

        check_partitions(num_partitions, "queue_stream")
        if partitioned and num_partitions != 1:
            msg = "queue_stream: partitioned=True keeps each item's own partitions; do not also pass num_partitions"
            raise ConfigError(msg)
        n = self._graph.source_name("queue", name)
        src = QueueSource(batches, name=n, one_at_a_time=one_at_a_time, default=default, num_partitions=num_partitions, partitioned=partitioned)
        return self.add_source(src)

    def constant_stream(self, records: Iterable[Any], *, name: str | None = None) -> DStream[Any]:
        """The same records in every batch."""
        from streamkeep.sources.queue import ConstantSource

        return self.add_source(ConstantSource(records, name=self._graph.source_name("constant", name)))

    def rate_stream(self, rows_per_second: float, *, name: str | None = None, start: int = 0, num_partitions: int = 1) -> DStream[tuple[int, int]]:
        """Records ``(i, timestamp_ms)``, `rows_per_second` per second of batch time (replayable)."""
        from streamkeep.sources.rate import RateSource

        check_partitions(num_partitions, "rate_stream")
        return self.add_source(RateSource(rows_per_second, name=self._graph.source_name("rate", name), start=start, num_partitions=num_partitions))

    def text_file_stream(
        self,
        directory: str,
        *,
        name: str | None = None,
        new_files_only: bool = True,
        encoding: str = "utf-8",
        errors: str = "strict",
        on_error: Any = None,
        storage_options: dict[str, Any] | None = None,
        num_partitions: int | None = None,
    ) -> DStream[str]:
        """Lines of the files that appear in `directory` (replayable via the planned file list).

        `directory` is a local path or an fsspec URL (``"s3://bucket/in"`` with
        `storage_options`). With `new_files_only` (Spark's default) the files already
        there when the job starts fresh are skipped. `encoding`/`errors` decode the
        lines; `on_error` (a dead-letter sink or a callable) takes the lines that cannot
        be decoded instead of failing the batch. See `streamkeep.sources.TextFileSource`.
        """
        from streamkeep.sources.files import TextFileSource

        if num_partitions is not None:
            check_partitions(num_partitions, "text_file_stream")
        n = self._graph.source_name("text_files", name)
        src = TextFileSource(
            directory,
            name=n,
            new_files_only=new_files_only,
            encoding=encoding,
            errors=errors,
            on_error=on_error,
            storage_options=storage_options,
            num_partitions=num_partitions,
        )
        return self.add_source(src)

    def binary_records_stream(self, directory: str, record_length: int, *, name: str | None = None) -> DStream[bytes]:
        """Records of `record_length` bytes from the files that appear in `directory` (as text_file_stream's files).

        A file whose size is not a multiple of `record_length` fails its batch
        (`SourceError` naming it). See `streamkeep.sources.binary.BinaryRecordsSource`.
        """
        from streamkeep.sources.binary import BinaryRecordsSource

        return self.add_source(BinaryRecordsSource(directory, record_length, name=self._graph.source_name("binary_records", name)))

    def parquet_file_stream(
        self, directory: str, *, name: str | None = None, columns: list[str] | None = None, new_files_only: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> DStream[Any]:
        """New Parquet files of `directory` (local or fsspec URL), one ``pyarrow.Table`` per file (docs/tables.md).

        Planned and replayed as text_file_stream's files. See `streamkeep.sources.tables.ParquetFileSource`.
        """
        from streamkeep.sources.tables import ParquetFileSource

        n = self._graph.source_name("parquet_files", name)
        src = ParquetFileSource(directory, name=n, columns=columns, new_files_only=new_files_only, storage_options=storage_options)
        return self.add_source(src)

    def json_file_stream(
        self, directory: str, *, name: str | None = None, schema: Any = None, new_files_only: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> DStream[Any]:
        """New JSON-lines files of `directory`, each decoded by pyarrow into one table (docs/tables.md).

        Planned and replayed as text_file_stream's files. See `streamkeep.sources.tables.JsonLinesTableSource`.
        """
        from streamkeep.sources.tables import JsonLinesTableSource

        n = self._graph.source_name("json_files", name)
        src = JsonLinesTableSource(directory, name=n, schema=schema, new_files_only=new_files_only, storage_options=storage_options)
        return self.add_source(src)

    def socket_text_stream(self, host: str, port: int, *, name: str | None = None) -> DStream[str]:
        """Lines from a TCP server; planned lines go to a write-ahead log in the checkpoint.

        The receiver connects in the background and reconnects when the connection drops;
        until it is connected batches are empty and a warning names the address once.

        Raises:
            ConfigError: `port` is not an int from 1 to 65535, or `host` is empty.
        """
        from streamkeep.sources.socket import SocketTextSource

        return self.add_source(SocketTextSource(host, port, name=self._graph.source_name("socket", name)))

    def kafka_stream(self, topics: str | Iterable[str], *, bootstrap_servers: str, name: str | None = None, **options: Any) -> DStream[Any]:
        """Records of Kafka topics as `KafkaRecord`s; offset ranges are planned and checkpointed.

        Options: starting_offsets ("earliest", "latest", "committed" or {(topic, partition): offset}),
        max_records_per_partition, group_id, consumer_config, and the others of
        `streamkeep.sources.kafka.KafkaSource`; ``tables="binary"|"string"|"json"`` (or a
        `streamkeep.tables.KafkaTables`) gives a table stream: one Arrow table per partition.
        """
        from streamkeep.sources.kafka import KafkaSource

        topic_list = [topics] if isinstance(topics, str) else list(topics) if isinstance(topics, Iterable) else None
        if not topic_list or not all(isinstance(t, str) and t for t in topic_list):
            msg = f"kafka_stream: topics must be a topic name or a non-empty list of topic names (non-empty str), got {topics!r}"
            raise ConfigError(msg)
        n = self._graph.source_name("kafka", name)
        known = [p for p in inspect.signature(KafkaSource).parameters if p not in ("topics", "bootstrap_servers", "name")]
        unknown = [k for k in options if k not in known]
        if unknown:  # a typo would otherwise be a TypeError from KafkaSource.__init__
            close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
            hints = "; ".join(f"{k!r} (did you mean {c[0]!r}?)" if c else repr(k) for k, c in close.items())
            msg = f"kafka_stream {n!r}: unknown option {hints}; the options are {', '.join(known)}"
            raise ConfigError(msg)
        return self.add_source(KafkaSource(topic_list, bootstrap_servers=bootstrap_servers, name=n, **options))

    def union(self, *streams: DStream[Any]) -> DStream[Any]:
        """The union of several streams with the same slide."""
        if not streams:
            msg = "union() needs at least one DStream"
            raise ConfigError(msg)
        return streams[0].union(*streams[1:])

    # -- running ---------------------------------------------------------------

    def _make_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            ckpt = None
            if self._checkpoint_url is not None:
                ckpt = Checkpoint(self._checkpoint_url, storage_options=self._storage_options, lease_timeout_s=self._lease_timeout_s)
            sched = Scheduler(
                self._graph,
                checkpoint=ckpt,
                clock=self._clock,
                resume=self._resume,
                snapshot_every=self._snapshot_every,
                keep_commits=self._keep_commits,
                allow_state_loss=self._allow_state_loss,
                inline_delta_bytes=self._inline_delta_bytes,
                executor=self._executor,
            )
            sched.listeners.extend(self._listeners)
            sched.prepare()
            self._graph.fixed = True  # the scheduler computes exactly this graph: refuse later additions
            self._scheduler = sched
        return self._scheduler

    def run(self, max_batches: int | None = None) -> int:
        """Run batch times back to back, without waiting for the clock.

        Returns after `max_batches` new batches, or when every finite source is
        exhausted and windows have drained (runs forever on an infinite source
        without `max_batches`). Calling it again continues with the next batch time.
        Returns the number of batches run. Call `stop` when done; a program with a
        checkpoint that exits without it is stopped at exit (docs/concepts.md, "A job").
        """
        if max_batches is not None and (not isinstance(max_batches, int) or isinstance(max_batches, bool) or max_batches < 0):
            msg = f"run(): max_batches must be None (until every finite source is exhausted) or an int >= 0, got {max_batches!r}"
            raise ConfigError(msg)
        _hold_here(self)
        self._require_state("run()", "initialized", "active")
        if self._thread is not None:
            msg = "run() cannot be used while the context was started with start(); use await_termination()"
            raise ConfigError(msg)
        sched = self._make_scheduler()
        self._state = "active"
        self._announce_or_release(sched, "run")
        if self._checkpoint_url is not None and self._run_pid != os.getpid():
            self._run_pid = os.getpid()
            atexit.register(self._stop_at_exit)  # unregistered by _shutdown (stop(), or run() failing or interrupted)
        done = 0
        with self._run_lock:
            self._run_thread = threading.current_thread()
            try:
                while (max_batches is None or done < max_batches) and not self._stop_event.is_set():
                    if max_batches is None and sched.drained():
                        break
                    t = sched.next_time()
                    if hasattr(self._clock, "set"):
                        self._clock.set(t)
                    # the next batch certainly follows: it may be planned and read while this one computes
                    sched.ahead_ok = max_batches is not None and done + 1 < max_batches
                    sched.run_next()
                    done += 1
                sched.ahead_ok = False
                while sched.planned_ahead:  # stop() came after the next batch was planned and read: it runs too
                    if hasattr(self._clock, "set"):
                        self._clock.set(sched.next_time())
                    sched.run_next()
                    done += 1
                sched.flush()  # the batches run are committed when run() returns
            except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: an interruption, not a failure of the job
                said = "terminated (SIGTERM)" if stopped_by_sigterm(exc) else "interrupted"
                if self._checkpoint_url is not None:
                    log.warning(
                        "%s: a batch in progress that had not committed is abandoned (the next get_or_create "
                        "re-runs it with its plan); sources, sinks and the checkpoint are released",
                        said,
                    )
                else:
                    log.warning("%s: stopped (the batch in progress is abandoned)", said)
                self._shutdown(self._exit_time_left())
                raise
            except BaseException as exc:
                self._report_error(exc)
                self._shutdown(self._exit_time_left())
                raise
            finally:
                self._run_thread = None
        if self._stop_event.is_set():  # stop() (or the exit) came during a batch: it left the shutdown to us
            self._shutdown(self._exit_time_left())
        return done

    def _exit_time_left(self) -> float | None:
        """The merge wait a run() thread's own stop may take: None (unbounded, as stop()) unless the exit is stopping the job."""
        deadline = self._exit_deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def start(self, *, wait_for_clock: bool = True) -> None:
        """Start processing in a background thread, one batch per interval of the clock.

        The first batch runs at once: its batch time is the next one on the
        job's interval grid, at most one interval ahead of the clock (a fresh
        job does not wait up to an interval before its first output). Every
        later batch runs when the clock reaches its batch time. After :meth:`run`
        (or the CLI's ``--until-idle``) ran batches back to back, the
        checkpoint's batch times can be ahead of the clock; the next batch time
        is then in the future and, by default, the first batch waits for it
        (a warning says how long and why). With ``wait_for_clock=False`` the
        first batch runs at once and the next ones one interval of the clock
        apart: batch times keep their lead over the clock. Results stay exact
        (batch times still follow each other without gaps, so windows, state
        timeouts and the sinks' deduplication by batch time are unchanged);
        only the batch times' relation to wall time shifts: a batch labelled
        12:00 holds the records read at 12:00 minus the lead.

        A failure of the job is raised by :meth:`await_termination`. If the program
        never awaits it (nor calls :meth:`stop`), it is logged with where this
        ``start()`` was called, and the process exits with status 1 instead of 0
        (not in an interactive session; see docs/concepts.md, "A job").

        Args:
            wait_for_clock: wait for the clock to reach batch times that are
                ahead of it (True), or keep their lead (False).
        """
        _hold_here(self)
        self._require_state("start()", "initialized")
        sched = self._make_scheduler()
        lead_ms = sched.next_time() - int(self._clock.now_ms())
        offset_ms = 0
        if lead_ms > sched.interval:  # only an earlier back-to-back run() puts batch times ahead of the clock
            if wait_for_clock:
                log.warning(
                    "the next batch time (%d ms) is %.1f s ahead of the clock: an earlier run() or --until-idle ran "
                    "batches faster than real time, so the first batch waits %.1f s for the clock. To start now and "
                    "keep the batch times' lead, use start(wait_for_clock=False).",
                    sched.next_time(),
                    lead_ms / 1000,
                    lead_ms / 1000,
                )
            else:
                offset_ms = lead_ms
                log.warning(
                    "the next batch time (%d ms) is %.1f s ahead of the clock (an earlier run() or --until-idle); "
                    "wait_for_clock=False: batches run now and their times stay %.1f s ahead of the clock",
                    sched.next_time(),
                    lead_ms / 1000,
                    offset_ms / 1000,
                )
        self._state = "active"
        sched.live = True
        self._announce_or_release(sched, "start")
        early_ms = sched.interval if lead_ms <= sched.interval else 0  # the first batch runs at once (see above)
        self._thread = threading.Thread(target=self._loop, args=(sched, offset_ms, early_ms), name="streamkeep-scheduler", daemon=True)
        self._started_at = _caller_site()
        self._started_pid = os.getpid()
        atexit.register(self._at_exit)  # unregistered by _shutdown and by await_termination raising the failure
        self._thread.start()

    def _loop(self, sched: Scheduler, offset_ms: int = 0, early_ms: int = 0) -> None:
        # early_ms: how far ahead of the clock the first batch may run (its batch time stays on the grid)
        try:
            while not self._stop_event.is_set():
                t = sched.next_time()
                if not self._clock.wait_until(t - offset_ms - early_ms, self._stop_event):
                    break
                early_ms = 0
                sched.run_next()
        except BaseException as exc:
            with self._wait_lock:
                traced = self._awaiting == 0  # nobody waits to get it raised: the traceback now
                self._error = exc
            self._report_error(exc, trace=traced)
        finally:
            if self._error is None and self._stop_event.is_set():
                self._shutdown(self._exit_time_left())  # stop() may have been called from this thread (inside a batch)
            self._done.set()

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait until the job stops; True if it did. Re-raises the job's failure.

        Ctrl-C (KeyboardInterrupt) while waiting stops the job as `stop()` does: the batch
        in progress commits, then sources, sinks and the checkpoint (its lease) are
        released, and this returns True; the next `get_or_create` resumes after that
        batch. A second Ctrl-C stops waiting for the batch in progress (it is re-run,
        with its plan, by the next `get_or_create`) and raises KeyboardInterrupt.

        A failure raised here is the program's to handle: uncaught, it ends the program with
        status 1; caught, the exit status is the program's (no at-exit report). A failure that
        lands after a `timeout` returned False and is never awaited again makes the process
        exit 1 (see `start`).
        """
        _hold_here(self)
        if self._thread is None:
            if self._error is not None:
                raise self._error
            return self._state == "stopped"
        with self._wait_lock:
            self._awaiting += 1
        try:
            finished = _wait_waking(self._done.wait, timeout)
            self._wait_timed_out = not finished
        except KeyboardInterrupt as exc:
            self._stop_on_interrupt(exc)
            finished = True
        finally:
            with self._wait_lock:
                self._awaiting -= 1
        if self._error is not None:
            err, self._error = self._error, None
            self._shutdown()
            raise err
        return finished

    def _stop_on_interrupt(self, cause: KeyboardInterrupt) -> None:
        if stopped_by_sigterm(cause):
            log.warning(
                "terminated (SIGTERM): stopping after the batch in progress "
                "(another SIGTERM or Ctrl-C stops without waiting for it)"
            )
        else:
            log.warning("interrupted: stopping after the batch in progress (Ctrl-C again to stop without waiting for it)")
            noted = RUN_INTERRUPTS.get()
            if noted is not None:
                noted.append("SIGINT")
        try:
            self.stop(graceful=True)
        except KeyboardInterrupt as again:
            said = "terminated again (SIGTERM)" if stopped_by_sigterm(again) else "interrupted again"
            log.warning("%s: the batch in progress is abandoned; the next get_or_create re-runs it", said)
            self._shutdown()
            raise KeyboardInterrupt from None
        if self._error is not None:  # the job failed on its own meanwhile: say so rather than hide it
            err, self._error = self._error, None
            raise err
        last = self.last_batch_time_ms
        if last is not None and self._checkpoint_url is not None:
            log.warning("stopped; the next get_or_create resumes after the batch of %s", iso_ms(last))
        else:
            log.warning("stopped")

    def stop(self, *, graceful: bool = True) -> None:
        """Stop after the batch in progress (its commit completes); release resources.

        A batch is atomic with respect to the checkpoint, so stopping never leaves a
        half-written batch. With `graceful` (the default) this waits as long as the
        batch in progress takes to finish and commit. Without it, it waits at most
        30 s, then releases sources, sinks and the checkpoint anyway: a batch still
        running then cannot commit (the checkpoint refuses it) and is re-run, with
        exactly its plan, by the next `get_or_create`.
        Called from inside a batch (e.g. in `foreach_batch`), it returns at once and
        the job stops once that batch has committed.
        Under ``run(n)`` on an executor that reads ahead (Ray), the batch after the one in
        progress may already be planned and read: it runs and commits too before the job
        stops (its input was taken from the sources; stopping without it would lose a
        queue's records).
        """
        self._stop_event.set()
        me = threading.current_thread()
        if me is self._thread or me is self._run_thread:
            return  # inside a batch: the loop stops and shuts down after this batch's commit
        if self._run_lock.acquire(timeout=-1 if graceful else 30):  # a run() in another thread finishes its batch first
            self._run_lock.release()
        if self._thread is not None and graceful:
            thread = self._thread

            def joined(step: float) -> bool:
                thread.join(step)
                return not thread.is_alive()

            _wait_waking(joined, None)
        elif self._thread is not None:
            self._thread.join(timeout=30)
        self._shutdown()

    def _stop_at_exit(self, deadline: float | None = None) -> None:
        """At interpreter exit, a context with a checkpoint that ran `run()` and was never stopped is stopped as `stop()` stops it.

        Spark's shutdown hook does the same. The batches `run()` returned are committed already; what
        the stop adds is the snapshot merge in flight (without it a script run from cron that never
        calls ``stop()`` keeps no snapshot and its restart chain grows run after run) and the release
        of sources, sinks and the checkpoint's lease. Two waits are bounded, together, by `EXIT_MERGE_WAIT_S`
        from the start of the exit's first such stop (one deadline for every context the exit stops: `_ExitDeadline`;
        `streamkeep run` passes its own `deadline`, one for the jobs the script left): a `run()` still running in another thread finishing its batch (and its own
        stop of the job, which keeps the same deadline), and the merge; past that the merge is dropped, the
        lease is left to end with the process, nothing is lost. The rest (sinks' flush and close, sources'
        close, the executor's shutdown, the lease's release) is not bounded, as in `stop()`. A failure
        of the stop is logged, not raised (the exit status stays the program's). Registered by the
        first `run()` after streamkeep's exit-status hook, so it runs before that one. Nothing in a
        forked child (its exit is not the job's). Not for a context without a checkpoint: its exit
        loses nothing, and the hook would keep it (and its state) in memory until the exit, where
        it was collected once unreferenced (a checkpoint's background threads keep its job anyway).
        """
        if self._state == "stopped" or os.getpid() != self._run_pid:
            return
        log.info(
            "streamkeep: the program is exiting without ssc.stop() after run(): stopping the job as stop() does "
            "(waiting at most %g s for a snapshot merge in flight and a run() in another thread)",
            EXIT_MERGE_WAIT_S,
        )
        # Before the stop event: a run() thread that sees it keeps it too. One deadline for the whole exit (every context's).
        self._exit_deadline = _ExitDeadline.get() if deadline is None else deadline
        self._stop_event.set()
        try:
            given = self._exit_time_left() or 0.0  # what the exit's one deadline leaves this context
            if self._run_lock.acquire(timeout=given):  # a run() in another thread finishes its batch first
                self._run_lock.release()
            else:
                log.warning(
                    "streamkeep: a run() still running at exit did not finish its batch within %.3g s (the exit waits at most "
                    "%g s for all its jobs): stopping without it",
                    given,
                    EXIT_MERGE_WAIT_S,
                )
            left = self._exit_time_left()
            if not self._shutdown(merge_timeout_s=left, lock_timeout_s=left):
                log.warning(
                    "streamkeep: the job's stop, begun by its run() thread, did not end within the %g s the exit waits for "
                    "its jobs: exiting without it (a snapshot merge in flight is dropped and the lease left to end with the "
                    "process; a restart reads the longer chain, which is whole: nothing is lost)",
                    EXIT_MERGE_WAIT_S,
                )
        except KeyboardInterrupt:
            log.warning(
                "streamkeep: interrupted while stopping the job at exit: a snapshot merge in flight is dropped "
                "(a restart reads the longer chain, which is whole: nothing is lost)"
            )
        except Exception as exc:
            log.warning(
                "streamkeep: stopping the job at exit failed (%s: %s); the batches run() returned are committed. "
                "Call ssc.stop() before exiting to get such an error raised",
                type(exc).__name__,
                exc,
            )

    def _at_exit(self) -> None:
        """At interpreter exit, a started job not stopped: say so (the job thread dies with the process, silently).

        If it failed and the failure was never raised to the program (no `await_termination`), the
        process exits with status 1 instead of 0 (see `streamkeep._exit_status`), so a supervisor
        sees the failure; except in an interactive session. Nothing in a forked child (its exit
        is not the job's; the parent still runs it).
        """
        if self._state == "stopped" or os.getpid() != self._started_pid:
            return
        err = self._error
        if err is None:
            log.warning("streamkeep: %s", self._running_at_exit_text())
            return
        forced = not interactive()
        if self._wait_timed_out:
            why = "the program's ssc.await_termination(timeout) returned before it failed and it never awaited again"
        else:
            why = "the program never called ssc.await_termination(), which re-raises the failure"
        hint = " (in a test: stop the job and call ssc.await_termination(), which raises the failure, in the test or its teardown)" if "pytest" in sys.modules else ""
        log.error(
            "streamkeep: the streaming job started at %s failed (%s: %s) and %s%s. Call ssc.await_termination() "
            "after ssc.start() to get the failure raised (and handle it, or let it end the program)%s",
            self._started_at,
            type(err).__name__,
            err,
            why,
            "; exiting with status 1" if forced else "",
            hint,
        )
        with contextlib.suppress(Exception):  # release sources, sinks and the checkpoint's lease as stop() does
            self._shutdown()
        if forced:
            request_failed_exit()  # streamkeep's last at-exit hook exits 1, after the program's own hooks

    def _take_unawaited_failure(self) -> BaseException | None:
        """`streamkeep run`, after the script ended: a background failure it never awaited (the job is shut down), or None."""
        err = self._error
        if err is None or self._state == "stopped":
            return None
        self._error = None
        with contextlib.suppress(Exception):  # as the at-exit path: the failure is what is reported
            self._shutdown()
        return err

    def _running_at_exit_text(self) -> str:
        """What the at-exit warning says: why the job is still running, what is lost, what to call."""
        if self._wait_timed_out:
            why = "await_termination(timeout) returned before it stopped"
            fix = "Call ssc.stop() before exiting to stop it after the batch in progress, or await_termination() without a timeout to keep it running"
        else:
            why = f"started at {self._started_at} without await_termination()?"
            fix = "Call ssc.await_termination() after ssc.start() to keep the job running, or ssc.stop() to stop it after the batch in progress"
        if self._checkpoint_url is not None:
            lost = "a batch it had planned but not committed is re-run at the next get_or_create"
        else:
            lost = "it has no checkpoint: its state and the batch in progress are lost"
        return f"the program is exiting while the streaming job it started is still running ({why}): the job ends with it; {lost}. {fix}"

    def _shutdown(self, merge_timeout_s: float | None = None, lock_timeout_s: float | None = None) -> bool:
        """Stop the job once: close the scheduler (its merge wait bounded by `merge_timeout_s`), the dashboard; tell listeners.

        `_lock` is held while closing: a concurrent stop() returns only once resources are released. With
        `lock_timeout_s` (the exit) a stop another thread is doing is waited for that long at most: False if
        it was still going on then, else True.
        """
        atexit.unregister(self._at_exit)
        atexit.unregister(self._stop_at_exit)
        if not self._lock.acquire(timeout=-1 if lock_timeout_s is None else lock_timeout_s):
            return False
        try:
            if self._state == "stopped":
                return True
            self._state = "stopped"
            sched = self._scheduler
            try:
                if sched is not None:
                    sched.close(merge_timeout_s)
            finally:
                if sched is not None and self._announced:
                    if sched.batches_done == 0 and not sched.restored:  # its last_time is the time before a first batch
                        log.info("stopped after 0 batches (none ran)")
                    else:
                        log.info(
                            "stopped after %d batches; last batch %s",
                            sched.batches_done,
                            iso_ms(sched.last_time),
                            extra=batch_extra(sched.last_time),
                        )
                    emit(sched.listeners, "on_job_stopped", JobStopped(sched.last_time, sched.batches_done, self._failed))
                if self._ui is not None:
                    self._ui.close()
                    self._ui = None  # `ui_url` is None again: nothing serves there any more
        finally:
            self._lock.release()
        return True

    # -- observability -----------------------------------------------------------

    def _announce_or_release(self, sched: Scheduler, mode: str) -> None:
        """`_announce`; if that fails (e.g. the dashboard's port is taken), stop: the checkpoint is released."""
        try:
            self._announce(sched, mode)
        except BaseException:
            self._shutdown()
            raise

    def _announce(self, sched: Scheduler, mode: str) -> None:
        """First start()/run(): start the dashboard, then tell listeners (and the log) how the job starts."""
        if self._announced:
            return
        if self._ui_port is not None and self._ui is None:
            from streamkeep.ui._server import start_ui

            self._ui = start_ui(self._ui_host, self._ui_port, lambda: self._state, scan=self._ui_scan)
            sched.listeners.insert(0, self._ui.collector)
            log.info("dashboard at %s (metrics at %smetrics)", self._ui.url, self._ui.url)
        if self._run_hook is not None:
            self._run_hook(self, sched)
        self._announced = True
        ev = job_started(sched, mode, int(self._clock.now_ms()), self._checkpoint_url)
        emit(sched.listeners, "on_job_started", ev)

    def _report_error(self, exc: BaseException, *, trace: bool = False) -> None:
        """Log the job's failure at ERROR (with its traceback if `trace`: nobody will see it raised now)."""
        self._failed = True
        sched = self._scheduler
        t = None
        if sched is not None:
            try:
                t = sched.next_time()
            except Exception:  # no batch time yet: the failure is outside a batch
                t = None
        log.error(
            "streaming job failed at batch %s: %s: %s", iso_ms(t), type(exc).__name__, exc, extra=batch_extra(t), exc_info=exc if trace else None
        )
        if sched is not None:
            emit(sched.listeners, "on_error", ErrorInfo(t, type(exc).__name__, str(exc), exc))

    @property
    def ui_url(self) -> str | None:
        """The dashboard's address (``http://127.0.0.1:PORT/``) from start with `ui_port` until `stop`; else None."""
        return None if self._ui is None else str(self._ui.url)

    @property
    def last_batch_time_ms(self) -> int | None:
        """The batch time of the last batch run (committed when a checkpoint is set); None before any.

        After a restore, the batch of the commit restored (until a newer one runs).
        """
        sched = self._scheduler
        if sched is None or (sched.batches_done == 0 and not sched.restored):
            return None  # a fresh job's last_time is the time before its first batch: no batch ran
        return sched.last_time

    @property
    def restored(self) -> bool:
        """True when state was restored from a checkpoint's commit (see `replays_left` for a run stopped before its first)."""
        return self._scheduler is not None and self._scheduler.restored

    @property
    def replays_left(self) -> int:
        """Batches an earlier run planned but did not commit, which this context re-runs first (with their plans).

        Known after `get_or_create` returns. Non-zero with `restored` False: the earlier run
        stopped (or was killed) before its first commit, so this is a resume, not a fresh start.

        Example:
            >>> ssc = StreamingContext(1.0)
            >>> ssc.replays_left
            0
        """
        return 0 if self._scheduler is None else self._scheduler.replays_left

    # -- recovery --------------------------------------------------------------

    @classmethod
    def get_or_create(
        cls, checkpoint: str | os.PathLike[str], setup: Callable[[], StreamingContext], *, storage_options: dict[str, Any] | None = None
    ) -> StreamingContext:
        """Resume from `checkpoint` if it holds state, else start fresh; `setup()` always runs.

        The graph always comes from the current code (`setup()`); state and source
        positions are restored into it by operator name, and batches that were
        planned but not committed are re-run with exactly their plans when the
        context starts. An incompatible code change raises
        `IncompatibleCheckpointError` here, before anything runs.

        `setup()` must return a `StreamingContext` whose checkpoint is `checkpoint` (the
        same directory: ``ckpt`` and ``ckpt/`` are one) or that has none (it then gets
        `checkpoint`).

        Raises:
            ConfigError: `setup` is not callable, `setup()` returned no StreamingContext, or one with
                another checkpoint.
            IncompatibleCheckpointError: the checkpoint's state does not fit the graph
                `setup()` built (the message names the operator and what to do).
            CheckpointInUseError: another live driver holds the checkpoint.
        """
        checkpoint = _as_checkpoint_url(checkpoint, "get_or_create")
        if not callable(setup):
            what = "a StreamingContext: pass the function that builds it (setup, not setup())" if isinstance(setup, StreamingContext) else f"{type(setup).__name__}"
            msg = f"get_or_create: setup must be a function taking no arguments that builds and returns the StreamingContext, got {what}"
            raise ConfigError(msg)
        ssc = setup()
        held = _HOLD.get()
        if held is not None and isinstance(ssc, StreamingContext):
            if ssc._checkpoint_url is None:
                ssc._checkpoint_url = checkpoint
            held.via_get_or_create.append(ssc)
            return ssc
        if not isinstance(ssc, StreamingContext):
            msg = f"get_or_create: setup() must return a StreamingContext, got {type(ssc).__name__}"
            raise ConfigError(msg)
        if ssc._checkpoint_url is None:
            ssc._checkpoint_url = checkpoint
        if not _same_checkpoint(ssc._checkpoint_url, checkpoint):
            msg = (
                f"get_or_create: setup() returned a context with checkpoint {ssc._checkpoint_url!r}, not {checkpoint!r}: "
                f"pass the same checkpoint to both (or leave checkpoint= out of the StreamingContext setup() builds)"
            )
            raise ConfigError(msg)
        if storage_options is not None and ssc._storage_options is None:
            ssc._storage_options = storage_options
        ssc._resume = True
        if ssc._graph.outputs():
            ssc._make_scheduler()  # claim, check compatibility and load state now: fail at start
        return ssc


__all__ = ["BatchInfo", "StreamingContext", "StreamkeepError"]

"""What one plan-log ``fdatasync`` costs on a disk: a growing append vs an overwrite in place (issue 14.1).

A plan log gets one small frame (a plan, SIZE bytes) per batch, made durable by one
``fdatasync``. The hypothesis under test: an append that grows the file changes its size,
so each ``fdatasync`` must also commit the inode to the filesystem journal (ext4: a
jbd2 commit), and that commit queues behind other writers' journal traffic (a snapshot
merge writing tens of MB and fsyncing them); an overwrite inside a region that was
preallocated *and zero-filled* (written, so no unwritten extents left to convert) changes
no metadata, so ``fdatasync`` only writes the data block.

Cases, each measured over the same rounds (interleaved blocks of OPS_PER_BLOCK writes, so a
load change hits every case alike):

* ``append``: ``write`` at the end of an O_APPEND file (it grows), then ``fdatasync``;
* ``zeroed``: ``pwrite`` at the logical end inside a file preallocated with zeros and
  fsynced once up front, then ``fdatasync``;
* ``fallocated``: the same inside a file given its size by ``fallocate`` only (unwritten
  extents: the first write to each block converts it, which needs the journal).

Each case runs idle and with a concurrent writer (a separate process writing WRITER_MB
to a new file, fsyncing it, deleting it, pausing WRITER_PAUSE_S, again), as a snapshot
merge does; with --writer-chunk-mb N also with a writer that fdatasyncs every N MB (bounding
the dirty data a plan's flush can queue behind). Prints median / p99 / max of the fdatasync time (ms) per case, and the
ratios to ``append`` measured in this run, and how many took over SLOW_MS (a tail measure
less at the mercy of one sample than the max).

Run: ``.venv/bin/python bench/fsync.py [--dir /tmp] [--ops 600] [--size 600]``.

Results on the development VM (session 12; /tmp is ext4 on a virtio disk, "mounted filesystem
... without journal" in dmesg, /sys/fs/ext4/vda/journal_task ``<none>``: there is no jbd2
commit for an append to wait on). 7 runs, load average 3.2-6.3 (other engineers' work):

* idle: every case alike (zeroed/append p99 0.78-1.17x, median of runs 1.0x);
* beside the 50 MB writer: zeroed/append p99 0.69-1.56x (median of runs 0.83x), max
  0.37-2.40x (0.86x), fallocated/append p99 0.48-1.15x: a small gain at most, within the noise;
* a writer that fdatasyncs every 4 MB instead of once at the end: append p99 0.36-0.90x of the
  whole-file writer's (median of runs 0.44x), fdatasyncs over 20 ms 0-5 instead of 13-25.

The same overwrite tried in the engine (a zero-filled 64 KiB plan log written with pwrite; not
kept), alternating with main, 3 pairs of 150 batches with 1M keys: the plan's fdatasync p99 was
9.6/13.4/11.3 ms on main and 12.2/10.1/11.8 ms with it. The batch tail of bench/checkpoint.py
there is mostly the loop waiting for room in the committer (four fsyncs per commit: delta
file, its directory, commit record, its directory; batches back to back keep the committer busy
0.9-1.1x the batch median in 22 runs), see its "waited on" lines. With 40 ms between batches the
committer waits vanish and what remains is the plan's wait (its fdatasync, and the plan thread
getting a core back at load 4-6 on 2 cores) and stalls with no checkpoint wait at all.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event

CASES = ("append", "zeroed", "fallocated")
#: Writes of one case before the next case's (1: strictly interleaved, so each case sees the writer alike).
OPS_PER_BLOCK = 1


def _writer(directory: str, mb: int, chunk_mb: int, pause_s: float, stop: Event) -> None:
    """A snapshot merge's disk traffic: MB megabytes written to a new file, fsynced, deleted; again until `stop`.

    With `chunk_mb`, an fdatasync after every `chunk_mb` MB too (a writer that bounds its dirty data).
    """
    chunk = os.urandom(1 << 20)
    i = 0
    while not stop.is_set():
        path = os.path.join(directory, f"merge-{i}.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for j in range(mb):
                os.write(fd, chunk)
                if chunk_mb and (j + 1) % chunk_mb == 0:
                    os.fdatasync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
        i += 1
        stop.wait(pause_s)


class _Log:
    """One log file of a case, written SIZE bytes at a time at its logical end."""

    def __init__(self, directory: str, case: str, capacity: int) -> None:
        self.case = case
        self.path = os.path.join(directory, f"{case}.log")
        self.capacity = capacity
        self.end = 0
        if case == "append":
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            return
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if case == "zeroed":
            zeros = bytes(1 << 20)
            left = capacity
            while left > 0:
                left -= os.write(self.fd, zeros[: min(left, len(zeros))])
        else:
            os.posix_fallocate(self.fd, 0, capacity)
        os.fsync(self.fd)

    def write(self, data: bytes) -> float:
        """Write `data` at the logical end and fdatasync; the fdatasync's seconds."""
        if self.case == "append":
            os.write(self.fd, data)
        else:
            if self.end + len(data) > self.capacity:
                msg = f"{self.path}: capacity {self.capacity} exceeded; raise --ops or lower --size"
                raise RuntimeError(msg)
            os.pwrite(self.fd, data, self.end)
        self.end += len(data)
        t0 = time.perf_counter()
        os.fdatasync(self.fd)
        return time.perf_counter() - t0

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


def _measure(directory: str, ops: int, size: int, gap_s: float) -> dict[str, list[float]]:
    """fdatasync seconds per case, `ops` each, cases interleaved in blocks."""
    logs = {c: _Log(directory, c, ops * size + (1 << 20)) for c in CASES}
    out: dict[str, list[float]] = {c: [] for c in CASES}
    data = os.urandom(size)
    try:
        done = 0
        while done < ops:
            n = min(OPS_PER_BLOCK, ops - done)
            for c in CASES:
                for _ in range(n):
                    out[c].append(logs[c].write(data))
                    if gap_s:
                        time.sleep(gap_s)
            done += n
    finally:
        for log in logs.values():
            log.close()
    return out


def _stats(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return statistics.median(s) * 1e3, p99 * 1e3, s[-1] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to test (default: %(default)s)")
    ap.add_argument("--ops", type=int, default=600, help="fdatasyncs per case and setting (default: %(default)s)")
    ap.add_argument("--size", type=int, default=600, help="bytes per write, about one plan frame (default: %(default)s)")
    ap.add_argument("--gap-ms", type=float, default=2.0, help="pause after each write, a batch's other work (default: %(default)s)")
    ap.add_argument("--slow-ms", type=float, default=20.0, help="count the fdatasyncs slower than this (column >SLOW; default: %(default)s)")
    ap.add_argument("--writer-mb", type=int, default=50, help="MB the concurrent writer writes then fsyncs (default: %(default)s)")
    ap.add_argument("--writer-chunk-mb", type=int, default=0, help="also measure with a writer that fdatasyncs every this many MB (setting 'chunk<N>'); 0: not (default)")
    ap.add_argument("--writer-pause", type=float, default=0.2, help="seconds between the writer's files (default: %(default)s)")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"loadavg at start: {f.read().strip()}")
    work = tempfile.mkdtemp(prefix="skfsync-", dir=args.dir)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        results["idle"] = _measure(work, args.ops, args.size, args.gap_ms / 1e3)
        settings = {"writer": 0, **({f"chunk{args.writer_chunk_mb}": args.writer_chunk_mb} if args.writer_chunk_mb else {})}
        for name, chunk_mb in settings.items():
            stop = mp.Event()
            proc = mp.Process(target=_writer, args=(work, args.writer_mb, chunk_mb, args.writer_pause, stop), daemon=True)
            proc.start()
            try:
                time.sleep(0.5)
                results[name] = _measure(work, args.ops, args.size, args.gap_ms / 1e3)
            finally:
                stop.set()
                proc.join(30)
    finally:
        for n in os.listdir(work):
            os.unlink(os.path.join(work, n))
        os.rmdir(work)
    print(f"dir {args.dir}, {args.ops} fdatasyncs per case of {args.size} B writes, gap {args.gap_ms} ms; writer {args.writer_mb} MB + fsync every {args.writer_pause} s")
    print(f"{'setting':8} {'case':11} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'p99/med':>8} {'max/med':>8} {'>SLOW':>6}")
    for setting, per in results.items():
        base = _stats(per["append"])
        for c in CASES:
            med, p99, mx = _stats(per[c])
            slow = sum(x * 1e3 > args.slow_ms for x in per[c])
            print(f"{setting:8} {c:11} {med:10.2f} {p99:8.2f} {mx:8.2f} {p99 / med:8.1f} {mx / med:8.1f} {slow:6d}")
        for c in CASES[1:]:
            med, p99, mx = _stats(per[c])
            print(f"{setting:8} {c} / append: median {med / base[0]:.2f}x, p99 {p99 / base[1]:.2f}x, max {mx / base[2]:.2f}x")
    with open("/proc/loadavg") as f:
        print(f"loadavg at end: {f.read().strip()}")


if __name__ == "__main__":
    main()

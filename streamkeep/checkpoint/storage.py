"""`CheckpointStorage`: whole-file IO on any fsspec URL, with one atomic primitive.

Every file is written whole and never modified. `create` is the single atomic
step the protocol needs (a commit record appears completely or not at all, and
only if no other record has that name):

* local paths: write a temp file, fsync, `os.link` it to its name (fails if the
  name exists), fsync the directory;
* S3 (s3fs): a conditional put (``If-None-Match: *``) through ``open(mode="xb")``;
* other filesystems: ``mode="xb"`` where the filesystem supports it.

The one exception to whole files, on local disks only, is an append log (`open_append`,
`append`): a file created whole with its first record, to which later records are
appended, each made durable by one ``fdatasync`` (no new name, so no directory flush).

Knows nothing of operators, sources or sinks. Imports streamkeep.errors and _faults.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from typing import Any

from streamkeep import _faults
from streamkeep._util import fsync_dir, fsync_path, random_id
from streamkeep.errors import CheckpointError, ConfigError, CorruptCheckpointError


def confine(rel: str) -> str:
    """`rel` if it names a place inside a checkpoint root, else `CorruptCheckpointError`.

    Paths read back from checkpoint data (a commit record's state chain) must stay under the
    root: relative, ``/``-separated, without empty, ``.`` or ``..`` components and without a
    backslash or NUL. Anything else was not written by streamkeep.
    """
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or any(p in ("", ".", "..") for p in parts)
        or ":" in parts[0]  # a Windows drive or a URL scheme ("c:", "s3:")
    ):
        msg = (
            f"checkpoint data names the path {rel!r}, which is not inside the checkpoint: streamkeep only ever "
            f"writes plain relative paths there, so this file was altered or comes from elsewhere"
        )
        raise CorruptCheckpointError(msg)
    return rel


#: Spark users bring hdfs:// checkpoint paths; what fsspec needs for them, and what is tested.
_HDFS_HINT = (
    " hdfs:// goes through fsspec to pyarrow's HadoopFileSystem, which needs pyarrow, a Java runtime and Hadoop's "
    "libhdfs on this machine (JAVA_HOME, HADOOP_HOME, CLASSPATH from `hadoop classpath --glob`); streamkeep's tests "
    "cover local disks and S3 only, so prefer a local disk or an s3:// URL (see 'Checkpoint location' in "
    "docs/migration-from-pyspark.md)."
)


class CheckpointStorage:
    """Files under one checkpoint root URL.

    Args:
        url: fsspec URL or local path of the checkpoint root.
        storage_options: passed to fsspec (e.g. ``{"endpoint_url": ..., "key": ...}`` for s3).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options
        if "://" not in url and not storage_options:  # a plain local path: no need to import fsspec (~0.1 s)
            self.local = True
            self.root = os.path.abspath(os.path.expanduser(url.rstrip("/") or "/"))
            self._fs: Any = None
            return
        try:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem
        except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
            msg = "checkpointing needs fsspec: pip install streamkeep"
            raise ConfigError(msg) from exc
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            msg = f"cannot open checkpoint URL {url!r}: {exc}. For s3:// URLs install the extra: pip install 'streamkeep[s3]'"
            if url.split("://", 1)[0].lower() in ("hdfs", "viewfs"):
                msg += "." + _HDFS_HINT
            raise ConfigError(msg) from exc
        except Exception as exc:  # a filesystem that connects when opened (ftp, sftp, ...): refused, no credentials
            raise self.unreachable(exc) from exc
        self._fs = fs
        self.root = root.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)
        if self.local:
            self.root = os.path.abspath(self.root)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use for a plain local path)."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    def path(self, rel: str) -> str:
        """Absolute path (in the filesystem's terms) of `rel`, which must stay under the root.

        Raises:
            CorruptCheckpointError: `rel` is absolute or climbs out of the root (see `confine`).
        """
        return f"{self.root}/{confine(rel)}" if rel else self.root

    def unreachable(self, exc: BaseException) -> CheckpointError:
        """The error for a storage the first contact could not reach (`exc`: the client's own error)."""
        msg = (
            f"cannot reach the checkpoint storage {self.url}: {type(exc).__name__}: {exc}. Check the URL, the "
            "credentials (the environment, or storage_options=...) and that the server is reachable; "
            "nothing was read or written."
        )
        if self.url.split("://", 1)[0].lower() in ("hdfs", "viewfs"):
            msg += _HDFS_HINT
        return CheckpointError(msg)

    def _err(self, what: str, rel: str, exc: BaseException) -> CheckpointError:
        msg = f"could not {what} checkpoint file {self.path(rel)} ({self.url}): {type(exc).__name__}: {exc}"
        return CheckpointError(msg)

    # -- writes ------------------------------------------------------------

    def write(self, rel: str, data: bytes, *, make_dirs: bool = True) -> None:
        """Write `rel` whole (replacing any previous content atomically on local disks).

        Without `make_dirs` a local write whose directory is gone fails (FileNotFoundError as the
        cause) instead of creating it: a lease renewal must not bring back a deleted checkpoint.
        """
        try:
            if self.local:
                self._local_write(rel, data, exclusive=False, make_dirs=make_dirs)
            else:
                with self.fs.open(self.path(rel), "wb") as f:
                    f.write(data)
        except OSError as exc:
            raise self._err("write", rel, exc) from exc

    def create(self, rel: str, data: bytes) -> bool:
        """Atomically create `rel` with `data`; False if it already exists."""
        try:
            if self.local:
                return self._local_write(rel, data, exclusive=True)
            try:
                with self.fs.open(self.path(rel), "xb") as f:
                    f.write(data)
            except FileExistsError:
                return False
            return True
        except OSError as exc:
            raise self._err("create", rel, exc) from exc

    def _local_write(self, rel: str, data: bytes, *, exclusive: bool, make_dirs: bool = True) -> bool:
        final = self.path(rel)
        directory = os.path.dirname(final)
        if make_dirs:
            os.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/.tmp-{random_id()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            half = len(data) // 2
            # os.write may write less than asked (Linux: at most ~2 GiB per call): loop until all is out.
            _write_all(fd, view[:half])
            _faults.point("storage.torn_write")
            _write_all(fd, view[half:])
            os.fsync(fd)
            size = os.fstat(fd).st_size
            if size != len(data):  # checked before the name appears: nothing can rely on a short file
                msg = f"wrote {size} bytes of {len(data)} to {tmp}"
                raise OSError(msg)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(directory)
        return True

    def sync(self, rels: list[str]) -> None:
        """Make the local files `rels` and their directories durable (nothing to do elsewhere: a put is durable).

        Recovery calls it before replaying plans read back: a driver killed between an
        append and its fdatasync left the plan in the page cache only, and a replay's
        outputs must not rest on a plan a power loss could still take away.
        """
        if not self.local:
            return
        for rel in rels:
            try:
                fsync_path(self.path(rel))
                fsync_dir(os.path.dirname(self.path(rel)))  # a plan log created just before the kill
            except OSError as exc:
                raise self._err("flush", rel, exc) from exc

    def open_append(self, rel: str) -> int:
        """Open the local file `rel` (created by `create`) for `append`; its file descriptor."""
        try:
            return os.open(self.path(rel), os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise self._err("open for appending", rel, exc) from exc

    def append(self, fd: int, rel: str, data: bytes, *, point: str) -> None:
        """Append `data` to the local file `rel` open as `fd` and make it durable (one ``fdatasync``).

        On an error, the file is cut back to its size before (best effort: what remains of a
        partial append is a tail that readers skip, see `_format.read_frames`). `point` is the crash
        point reached halfway through the write (a crash there leaves such a tail).
        """
        try:
            before = os.lseek(fd, 0, os.SEEK_END)
            view = memoryview(data)
            half = len(data) // 2
            try:
                _write_all(fd, view[:half])
                _faults.point(point)
                _write_all(fd, view[half:])
                os.fdatasync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        except OSError as exc:
            raise self._err("append to", rel, exc) from exc

    # -- reads -------------------------------------------------------------

    def read(self, rel: str) -> bytes:
        """The whole content of `rel`."""
        try:
            if self.local:
                with open(self.path(rel), "rb") as f:
                    return f.read()
            data: bytes = self.fs.cat_file(self.path(rel))
            return data
        except OSError as exc:
            raise self._err("read", rel, exc) from exc

    def exists(self, rel: str) -> bool:
        """True if `rel` exists."""
        if self.local:
            return os.path.exists(self.path(rel))
        return bool(self.fs.exists(self.path(rel)))

    def list(self, rel_dir: str) -> list[str]:
        """Names (not paths) of the files directly inside `rel_dir`, sorted; [] if absent."""
        if self.local:
            try:
                return sorted(n for n in os.listdir(self.path(rel_dir)) if not n.startswith(".tmp-"))
            except FileNotFoundError:
                return []
        try:
            self.fs.invalidate_cache(self.path(rel_dir))
            entries = self.fs.ls(self.path(rel_dir), detail=False)
        except FileNotFoundError:
            return []
        names = (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if not n.startswith(".tmp-"))

    def list_dirs(self, rel_dir: str) -> builtins.list[str]:
        """Names of the subdirectories of `rel_dir`."""
        if self.local:
            try:
                base = self.path(rel_dir)
                return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n)))
            except FileNotFoundError:
                return []
        try:
            self.fs.invalidate_cache(self.path(rel_dir))
            entries = self.fs.ls(self.path(rel_dir), detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")

    def size(self, rel: str) -> int:
        """Size in bytes of `rel`."""
        if self.local:
            return os.path.getsize(self.path(rel))
        return int(self.fs.size(self.path(rel)))

    def delete(self, rel: str) -> None:
        """Delete `rel` if it exists."""
        try:
            if self.local:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(rel))
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.path(rel))
        except OSError as exc:
            raise self._err("delete", rel, exc) from exc

    def remove_temp_files(self, rel_dir: str) -> None:
        """Delete leftovers of writes a crash interrupted (local disks only)."""
        if not self.local:
            return
        base = self.path(rel_dir)
        for dirpath, _, files in os.walk(base):
            for n in files:
                if n.startswith(".tmp-"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, n))


def _write_all(fd: int, view: memoryview) -> None:
    """Write every byte of `view` to `fd`, however many calls it takes."""
    while view:
        n = os.write(fd, view)
        if n <= 0:
            msg = f"os.write wrote nothing ({n}) with {len(view)} bytes left"
            raise OSError(msg)
        view = view[n:]

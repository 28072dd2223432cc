"""Content-addressed store for the stages of a sweep, on any pyarrow filesystem.

Each unit of work (distillation, dense pretraining, an IMP level, a mask, a retrain) lives
at ``stages/<stage>/<key>/`` and only counts once it is committed, so a crash at any point
leaves either a whole entry or nothing a reader will trust. On a local or mounted filesystem
the entry is staged beside its place, renamed in, and marked by ``DONE``; an object store
cannot rename a prefix, so there the files go to ``<key>/<attempt>/`` and one ``manifest.json``
object, written last, names that attempt and the checksums (one PUT: present or absent).
Checksums catch entries damaged afterwards (a truncated copy, a half-synced NFS file), which
are then recomputed instead of silently feeding later stages. Run history goes to ``index/``
as one Parquet file per run, because appending to one shared file from many nodes would race.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .processes import pid_alive

_INDEX_SCHEMA = pa.schema([
    ("key", pa.string()), ("stage", pa.string()), ("version", pa.int64()),
    ("settings", pa.string()), ("inputs", pa.string()), ("host", pa.string()),
    ("pid", pa.int64()), ("ray_node_id", pa.string()), ("start", pa.float64()),
    ("end", pa.float64()), ("wall_time_s", pa.float64()), ("sample_passes", pa.int64()),
    ("status", pa.string()), ("error", pa.string()),
    ("requested_by", pa.string()),  # who first needed it: a trial's slot and method, or the driver
])
_RESERVED = {"meta.json", "DONE"}
MANIFEST = "manifest.json"  # object stores: the commit

# Lease files tell processes apart, not threads: threads of one process queue here instead.
_THREAD_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class CorruptEntryError(ValueError):
    """A DONE entry whose files no longer match what was committed."""


def _quiet(message: str) -> None:
    """Default log sink; a module-level function, unlike a lambda, pickles for Ray."""


def _check_name(kind: str, value: str) -> None:
    # names become path parts; a leading dot would collide with the .tmp-/.trash- staging dirs
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise ValueError(f"{kind} {value!r} must be non-empty, without '/', not starting with '.'")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): _sha256(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


# What a file must pass, beyond its checksum, before an entry is trusted: a checksum only says the
# bytes are the ones meta.json names, and a forged meta.json names any bytes. ``training.stage``
# registers torch's weights_only load for ".pt" (this module stays torch-free). Each file passes once
# per process (keyed by path, size and mtime).
FILE_CHECKS: dict[str, Callable[[Path], None]] = {}
_PASSED: set[tuple[str, int, int]] = set()


def register_file_check(suffix: str, check: Callable[[Path], None]) -> None:
    FILE_CHECKS[suffix] = check


def _verify(directory: Path, meta: dict, label: str) -> None:
    for name, digest in meta["checksums"].items():
        p = directory / name
        if not p.is_file():
            raise CorruptEntryError(f"{label}/{name}: file is missing")
        found = _sha256(p)
        if found != digest:
            raise CorruptEntryError(
                f"{label}/{name}: sha256 is {found[:12]}..., meta.json recorded {digest[:12]}...")
        check = FILE_CHECKS.get(p.suffix)
        if check is not None:
            stat = p.stat()
            seen = (str(p), stat.st_size, stat.st_mtime_ns)
            if seen not in _PASSED:
                try:
                    check(p)
                except Exception as exc:  # noqa: BLE001 (whatever the check refuses, the entry is not trusted)
                    raise CorruptEntryError(f"{label}/{name}: {exc}") from None
                _PASSED.add(seen)


def _attempt_name(value: object) -> bool:
    return isinstance(value, str) and value.startswith("attempt-") and "/" not in value


def _ray_node_id() -> str | None:
    # If nothing imported ray it cannot be initialized, so skip paying for the import.
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    except Exception:
        return None


def _read_lease(path: str) -> dict:
    try:
        with open(path) as f:
            info = json.load(f)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):  # gone, or created but not yet written
        return {}


@dataclass
class Entry:
    stage: str
    key: str
    path: Path
    meta: dict
    cached: bool

    def file(self, name: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise CorruptEntryError(f"{p}: entry {self.stage}/{self.key} has no file {name!r}")
        return p


class _NullLease:
    def release(self) -> None:
        pass


class _Lease:
    """A held lease file; the heartbeat lets other nodes tell a slow holder from a dead one."""

    def __init__(self, path: str, token: str, interval_s: float) -> None:
        self.path, self.token = path, token
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(interval_s,), daemon=True).start()

    def _mine(self) -> bool:
        return _read_lease(self.path).get("token") == self.token

    def _beat(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s) and self._mine():
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._mine():  # after a takeover the file is someone else's
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class ArtifactStore:
    """Stages keyed by content hash under ``root`` (a path or any URI pyarrow understands).

    Only strings are pickled; the filesystem is rebuilt lazily, so Ray ships the store cheaply.
    """

    def __init__(self, root: str | os.PathLike, *, lease_timeout_s: float = 60.0,
                 poll_s: float = 0.2, log: Callable[[str], None] = _quiet) -> None:
        text = os.fspath(root)
        if "://" in text:
            base, sep, query = text.partition("?")  # s3://b/p?endpoint_override=...: options, not path
            self.uri = base.rstrip("/") + sep + query
        else:
            self.uri = str(Path(text).expanduser().resolve())
        self.lease_timeout_s, self.poll_s, self.log = float(lease_timeout_s), float(poll_s), log
        self._fs_cache: tuple[pafs.FileSystem, str] | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_fs_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _fs_cache=None)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    def _fs_root(self) -> tuple[pafs.FileSystem, str]:
        if self._fs_cache is None:
            self._fs_cache = (pafs.FileSystem.from_uri(self.uri) if "://" in self.uri
                              else (pafs.LocalFileSystem(), self.uri))
        return self._fs_cache

    @property
    def _fs(self) -> pafs.FileSystem:
        return self._fs_root()[0]

    @property
    def _local(self) -> bool:
        return isinstance(self._fs, pafs.LocalFileSystem)

    def _path(self, *parts: str) -> str:
        return "/".join([self._fs_root()[1].rstrip("/"), *parts])

    def local_root(self) -> Path | None:
        """The root as a local directory when the store is on a local (or NFS-mounted) filesystem."""
        return Path(self._path()) if self._local else None

    @property
    def location(self) -> str:
        """The URI without its options (``?endpoint_override=...``), for messages and paths."""
        return self.uri.partition("?")[0]

    def store_id(self) -> str:
        """Which store this is, however its URI spells its options: the coordinator's name."""
        return f"{self._fs.type_name}://{self._path()}"

    def entry_uri(self, stage: str, key: str) -> str:
        return f"{self.location}/stages/{stage}/{key}"

    def _exists(self, path: str) -> bool:
        return self._fs.get_file_info(path).type != pafs.FileType.NotFound

    def _write(self, path: str, data: bytes) -> None:
        with self._fs.open_output_stream(path) as f:
            f.write(data)

    # ---- reading -------------------------------------------------------------------------

    def _marker(self, stage: str, key: str) -> str:
        """The object whose presence means committed: DONE on a filesystem, the manifest elsewhere."""
        return self._path("stages", stage, key, "DONE" if self._local else MANIFEST)

    @property
    def _meta_name(self) -> str:
        return "meta.json" if self._local else MANIFEST

    def is_done(self, stage: str, key: str) -> bool:
        _check_name("stage", stage)
        _check_name("key", key)
        return self._exists(self._marker(stage, key))

    def get(self, stage: str, key: str) -> Entry | None:
        if not self.is_done(stage, key):
            return None
        label = self.entry_uri(stage, key)
        try:
            with self._fs.open_input_stream(self._path("stages", stage, key, self._meta_name)) as f:
                meta = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise CorruptEntryError(f"{label}/{self._meta_name}: unreadable ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("checksums"), dict):
            raise CorruptEntryError(f"{label}/{self._meta_name}: has no checksums")
        if not self._local and not _attempt_name(meta.get("attempt")):
            raise CorruptEntryError(f"{label}/{MANIFEST}: names no attempt")
        if self._local:
            path = Path(self._path("stages", stage, key))
            _verify(path, meta, label)
        else:
            path = self._download(stage, key, meta, label)
        return Entry(stage, key, path, meta, cached=True)

    def _download(self, stage: str, key: str, meta: dict, label: str) -> Path:
        """Object stores have no local path to hand out: give a verified copy, reused while it matches."""
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / "prunetune-store" / digest / stage
        dest = cache / key
        try:
            if json.loads((dest / "meta.json").read_text()) == meta:
                _verify(dest, meta, str(dest))
                return dest
        except (OSError, ValueError, CorruptEntryError):
            pass
        fresh = cache / f".dl-{key}-{uuid.uuid4().hex}"
        fresh.mkdir(parents=True)
        try:
            pafs.copy_files(self._path("stages", stage, key, meta["attempt"]), str(fresh), source_filesystem=self._fs,
                            destination_filesystem=pafs.LocalFileSystem())
            (fresh / "meta.json").write_text(json.dumps(meta))
            _verify(fresh, meta, label)
            shutil.rmtree(dest, ignore_errors=True)
            try:
                os.rename(fresh, dest)
            except OSError:  # another reader on this host installed an identical copy first
                pass
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
        return dest

    def index(self) -> list[dict]:
        d = self._path("index")
        if self._fs.get_file_info(d).type != pafs.FileType.Directory:
            return []
        # in-flight writes are dot-files, which dataset discovery skips
        try:
            rows = pads.dataset(d, filesystem=self._fs, format="parquet", schema=_INDEX_SCHEMA).to_table().to_pylist()
        except (pa.ArrowException, OSError):
            rows = self._index_file_by_file(d)
        return sorted(rows, key=lambda r: r["start"] or 0.0)

    def _index_file_by_file(self, d: str) -> list[dict]:
        """The index rows of every readable file; each unreadable one (a torn copy, something else put
        there) is named once through ``log`` and skipped: the index is history, the entries are the truth."""
        rows: list[dict] = []
        for info in self._fs.get_file_info(pafs.FileSelector(d)):
            if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
                continue
            try:
                rows += pq.read_table(info.path, filesystem=self._fs, schema=_INDEX_SCHEMA).to_pylist()
            except (pa.ArrowException, OSError) as e:
                self.log(f"artifact store: skipping the unreadable index file {info.path} ({type(e).__name__}: {e})")
        return rows

    # ---- writing -------------------------------------------------------------------------

    def delete(self, stage: str, key: str) -> None:
        if self.is_done(stage, key):  # marker first, so nobody trusts a half-deleted entry
            self._fs.delete_file(self._marker(stage, key))
        base = self._path("stages", stage, key)
        if self._exists(base):
            self._fs.delete_dir(base)

    def get_or_compute(self, stage: str, key: str, compute: Callable[[Path], dict | None], *,
                       settings: dict | None = None, inputs: Sequence[str] = (),
                       version: int = 0, requested_by: str | None = None) -> Entry:
        root = self._path() if self._local else self.uri
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault((root, stage, key), threading.Lock())
        with thread_lock:
            corrupt = False
            while True:
                try:
                    entry = self.get(stage, key)
                    if entry is not None:
                        return entry
                except CorruptEntryError:
                    corrupt = True  # repaired below, under the lease, so no one deletes a fresh commit
                lease = self._acquire(stage, key, wait_for_done=not corrupt)
                if lease is None:
                    continue
                try:
                    entry = self.get(stage, key)  # a peer may have committed while we took the lease
                except CorruptEntryError as e:
                    self.log(f"artifact store: {e}; deleting and recomputing")
                    self.delete(stage, key)
                    entry = None
                if entry is None:
                    break
                lease.release()
                return entry
            try:
                return self._compute(stage, key, compute, settings or {}, list(inputs), version, requested_by)
            finally:
                lease.release()

    def _acquire(self, stage: str, key: str, wait_for_done: bool):
        """Hold the lease for (stage, key), or return None once a peer finishes the entry.

        A local/NFS root has an atomic exclusive create: a lease file, which needs no Ray (``prunetune
        prune``, two sweeps on different clusters sharing an NFS store). An object store has none: the
        store's Ray coordinator grants the lease (``training.coordinator``); outside Ray nothing can,
        and two processes may both compute an entry (the manifest keeps the result whole either way).
        """
        if not self._local:
            ray = sys.modules.get("ray")
            if ray is None or not ray.is_initialized():
                if not getattr(self, "_said_uncoordinated", False):
                    self.log(f"artifact store: {self.location} is an object store and Ray is not running here: "
                             "no coordinator, so a stage another process is computing may be computed twice")
                    self._said_uncoordinated = True
                return _NullLease()
            from .coordinator import acquire

            return acquire(self.store_id(), f"{stage}/{key}", self.lease_timeout_s,
                           (lambda: self.is_done(stage, key)) if wait_for_done else (lambda: False),
                           self.log, self.entry_uri(stage, key))
        path = self._path("leases", stage, f"{key}.lease")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        token, waited = uuid.uuid4().hex, False
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                               "token": token, "time": time.time()}, f)
                return _Lease(path, token, self.lease_timeout_s / 4)
            holder = _read_lease(path)
            why = self._stale(path, holder)
            if why == "gone":
                continue
            if why:
                self.log(f"artifact store: taking over {why} lease {path}")
                self._break(path, holder.get("token"))
                continue
            if wait_for_done and self.is_done(stage, key):
                return None
            if not waited:
                self.log(f"artifact store: waiting for {self.entry_uri(stage, key)} "
                         f"(computed by {holder.get('host')} pid {holder.get('pid')})")
                waited = True
            time.sleep(self.poll_s)

    def _stale(self, path: str, holder: dict) -> str | None:
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return "gone"
        if age > self.lease_timeout_s:
            return f"expired ({age:.0f}s without heartbeat)"
        pid = holder.get("pid")
        # a SIGKILLed driver on this host must not block a resume for a whole timeout
        if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
            return f"dead (pid {pid} exited)"
        return None

    @staticmethod
    def _break(path: str, token: str | None) -> None:
        """Rename before removing, so of several processes judging a lease stale only one wins."""
        grave = f"{path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        if _read_lease(grave).get("token") != token:
            try:  # it was replaced by a live lease after we read it: put that one back
                os.link(grave, path)
            except OSError:
                pass
        os.unlink(grave)

    def _compute(self, stage: str, key: str, compute: Callable[[Path], dict | None],
                 settings: dict, inputs: list, version: int, requested_by: str | None = None) -> Entry:
        start = time.time()
        row = {"key": key, "stage": stage, "version": version, "requested_by": requested_by,
               "settings": json.dumps(settings, sort_keys=True, default=str),
               "inputs": json.dumps(inputs, default=str), "host": socket.gethostname(),
               "pid": os.getpid(), "ray_node_id": _ray_node_id(), "start": start}
        work = Path(tempfile.mkdtemp(prefix=f"prunetune-{stage}-"))
        try:
            try:
                extra = dict(compute(work) or {})
                checksums = _checksums(work)
                if _RESERVED & checksums.keys():
                    raise ValueError(f"compute for {stage}/{key} wrote reserved names {_RESERVED}")
            except Exception as e:
                end = time.time()
                self._append_index({**row, "end": end, "wall_time_s": end - start,
                                    "status": "error", "error": f"{type(e).__name__}: {e}"})
                raise
            end = time.time()
            meta = {"start": start, "end": end, "wall_time_s": end - start, "host": row["host"],
                    "pid": row["pid"], **extra, "stage": stage, "key": key, "version": version,
                    "settings": settings, "inputs": inputs, "checksums": checksums}
            self._commit(stage, key, work, meta)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        passes = meta.get("sample_passes")
        self._append_index({**row, "end": end, "wall_time_s": meta["wall_time_s"], "status": "done",
                            "sample_passes": None if passes is None else int(passes)})
        return replace(self.get(stage, key), cached=False)

    def _commit(self, stage: str, key: str, work: Path, meta: dict) -> None:
        """Stage beside the final place and move in; DONE, written last, is what readers trust."""
        if not self._local:
            return self._commit_object(stage, key, work, meta)
        fs = self._fs
        tmp = self._path("stages", stage, f".tmp-{key}-{uuid.uuid4().hex}")
        final = self._path("stages", stage, key)
        fs.create_dir(tmp, recursive=True)
        try:
            pafs.copy_files(str(work), tmp, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            self._write(f"{tmp}/meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        except BaseException:  # a full disk, a lost mount: no half-staged directory left behind
            try:
                fs.delete_dir(tmp)
            except Exception:  # noqa: BLE001 (the original error is the one to report)
                pass
            raise
        if self._local:
            try:
                os.rename(tmp, final)
            except OSError:
                if self.is_done(stage, key):  # another writer won: keep theirs
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                trash = self._path("stages", stage, f".trash-{key}-{uuid.uuid4().hex}")
                os.rename(final, trash)  # remains of a writer that died before DONE
                os.rename(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
        self._write(f"{final}/DONE", json.dumps({"time": time.time()}).encode())

    def _commit_object(self, stage: str, key: str, work: Path, meta: dict) -> None:
        """Files under a fresh ``attempt-*`` prefix, then the one manifest object naming it: readers see
        the whole entry or none. Run under the lease, so attempts left by holders that died are removed."""
        fs, base = self._fs, self._path("stages", stage, key)
        if self.is_done(stage, key):  # committed by a holder whose lease was taken from it: keep theirs
            return
        attempt = f"attempt-{int(time.time())}-{uuid.uuid4().hex[:8]}"
        fs.create_dir(f"{base}/{attempt}", recursive=True)
        pafs.copy_files(str(work), f"{base}/{attempt}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        self._write(f"{base}/{MANIFEST}", json.dumps({**meta, "attempt": attempt}, indent=1, sort_keys=True,
                                                     default=str).encode())
        for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name != attempt:
                try:
                    fs.delete_dir(info.path)
                except OSError as e:  # garbage, not a result: say so and go on
                    self.log(f"artifact store: could not remove the abandoned {info.path}: {e}")

    def _append_index(self, row: dict) -> None:
        """One file per run, so writers on many nodes never share a file; history, not truth."""
        try:
            d = self._path("index")
            self._fs.create_dir(d, recursive=True)
            name = f"{int(row['start'] * 1000)}-{row['stage']}-{uuid.uuid4().hex[:12]}.parquet"
            pq.write_table(pa.Table.from_pylist([row], schema=_INDEX_SCHEMA), f"{d}/.{name}",
                           filesystem=self._fs)
            self._fs.move(f"{d}/.{name}", f"{d}/{name}")
        except Exception as e:  # losing a history row must not fail a finished stage
            self.log(f"artifact store: could not write index row for {row['stage']}/{row['key']}: {e}")

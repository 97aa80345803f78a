"""Snapshots of moto's in-memory state: write them to a directory, read them back.

A snapshot is one file, ``state.pickle``, plus S3 object bodies in ``blobs/`` (one file per
object version, written once and kept while a snapshot refers to it, so a 500 MB object is
written once, not every second). The file holds length-prefixed records: a header, one record
per moto service in use (``module:attribute`` of its ``BackendDict`` → its accounts, regions
and backends) and an end marker, so one service that no longer loads (a moto upgrade, a bug)
does not take the others with it and a truncated file is recognised as such.

Pickling is as complete as moto's objects allow: locks and conditions are re-created empty,
S3 bodies go to blob files; a backend that still does not pickle is saved attribute by
attribute, and what does not pickle is skipped and reported (never an error).
"""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
import struct
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

SNAPSHOT_NAME = "state.pickle"
BLOBS_NAME = "blobs"
MAGIC = b"INTERLINKED-EMULATOR-SNAPSHOT 1\n"
HEADER = "__header__"
END = "__end__"
_CHUNK = 16 * 1024 * 1024
# Bodies up to this size go into the snapshot itself; larger ones into blob files (written once).
INLINE_MAX = 64 * 1024
_LOCK_TYPE = type(threading.Lock())
_RLOCK_TYPE = type(threading.RLock())


class SnapshotError(Exception):
    """The snapshot file cannot be read at all (missing parts, wrong format, truncated)."""


@dataclass
class WriteReport:
    """What one snapshot wrote: its sequence number, sizes and what could not be pickled."""

    seq: int
    seconds: float = 0.0
    bytes: int = 0
    blobs_written: int = 0
    blob_bytes_written: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class RestoreReport:
    """What a restore found: the snapshot's sequence number, services restored, problems met."""

    seq: int = 0
    services: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---- S3 bodies ---------------------------------------------------------------------------------


def install_blob_ids() -> None:
    """Give every S3 object version a fresh blob id each time its body is set.

    The id is assigned *after* the body is written: a snapshot forked in the middle of a write
    still refers to the previous (complete) body's id. Blob files are named by these ids and
    written only when missing.
    """
    from moto.s3.models import FakeKey

    prop = FakeKey.value
    if getattr(prop.fset, "_interlinked_blob_ids", False):
        return
    setter = prop.fset

    def set_value(self: Any, new_value: bytes) -> None:
        setter(self, new_value)
        self.__dict__["_emu_blob"] = uuid.uuid4().hex

    set_value._interlinked_blob_ids = True  # type: ignore[attr-defined]
    FakeKey.value = property(prop.fget, set_value)


def _fake_key_class() -> type | None:
    module = sys.modules.get("moto.s3.models")
    return getattr(module, "FakeKey", None)


def _buffer_size(buffer: Any) -> tuple[Any, int]:
    inner = getattr(buffer, "_file", buffer)
    if isinstance(inner, io.BytesIO):
        return inner, inner.getbuffer().nbytes
    return inner, os.fstat(inner.fileno()).st_size


def _copy_buffer(buffer: Any, out: BinaryIO) -> int:
    """Copy a key's body without moving the file offset the server shares with us after fork."""
    inner, size = _buffer_size(buffer)
    if isinstance(inner, io.BytesIO):
        out.write(inner.getbuffer())
        return size
    fd, offset = inner.fileno(), 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            break
        out.write(chunk)
        offset += len(chunk)
    return offset


class _Blobs:
    def __init__(self, directory: Path, report: WriteReport):
        self.directory = directory
        self.report = report
        self.existing = {name for name in os.listdir(directory) if not name.endswith(".tmp")}
        self.referenced: set[str] = set()

    def save(self, key: Any) -> tuple[str | None, bytes | None]:
        """``(blob id, None)`` for a body in a blob file, ``(None, body)`` for a small one."""
        if key.__dict__.get("disposed"):
            return None, b""
        if _buffer_size(key._value_buffer)[1] <= INLINE_MAX:
            out = io.BytesIO()
            _copy_buffer(key._value_buffer, out)
            return None, out.getvalue()
        blob = key.__dict__.get("_emu_blob") or uuid.uuid4().hex
        self.referenced.add(blob)
        if blob not in self.existing:
            tmp = self.directory / f".{blob}.{os.getpid()}.tmp"
            with open(tmp, "wb") as out:
                written = _copy_buffer(key._value_buffer, out)
            os.replace(tmp, self.directory / blob)
            self.existing.add(blob)
            self.report.blobs_written += 1
            self.report.blob_bytes_written += written
        return blob, None

    def collect(self) -> None:
        """Remove the blob files this snapshot does not refer to."""
        for name in self.existing - self.referenced:
            (self.directory / name).unlink(missing_ok=True)


_restore_blobs: Path | None = None
_restore_warnings: list[str] = []


def _restore_key(cls: type, blob: str | None, max_size: int | None, inline: bytes | None = None) -> Any:
    key = cls.__new__(cls)
    key._value_buffer = tempfile.SpooledTemporaryFile(max_size or 8 * 1024 * 1024)  # noqa: SIM115 - owned by the key
    key.lock = threading.Lock()
    if inline is not None:
        key._value_buffer.write(inline)
    elif blob is not None:
        path = (_restore_blobs or Path(".")) / blob
        try:
            with open(path, "rb") as source:
                while chunk := source.read(_CHUNK):
                    key._value_buffer.write(chunk)
        except OSError as error:
            _restore_warnings.append(f"s3 object body {blob} missing ({error}); restored empty")
    return key


def _set_key_state(key: Any, state: dict) -> None:
    key.__dict__.update(state)


def _new_event(is_set: bool) -> threading.Event:
    event = threading.Event()
    if is_set:
        event.set()
    return event


# What threading.Thread.__init__ sets up for a live thread; a restored thread gets fresh ones.
_THREAD_INTERNALS = frozenset(
    {"_started", "_tstate_lock", "_stderr", "_invoke_excepthook", "_is_stopped", "_ident", "_native_id"}
    | {"_target", "_args", "_kwargs", "_handle"}
)


def _restore_thread(cls: type) -> threading.Thread:
    thread = cls.__new__(cls)
    threading.Thread.__init__(thread)
    return thread


def _set_thread_state(thread: threading.Thread, state: dict) -> None:
    thread.__dict__.update(state)


def _std_stream(name: str) -> Any:
    return getattr(sys, name)


def _weak_values(items: dict) -> weakref.WeakValueDictionary:
    return weakref.WeakValueDictionary(items)


def _weak_keys(items: dict) -> weakref.WeakKeyDictionary:
    return weakref.WeakKeyDictionary(items)


def _spooled(data: bytes, max_size: int) -> tempfile.SpooledTemporaryFile:
    spooled = tempfile.SpooledTemporaryFile(max_size)  # noqa: SIM115 - returned open
    spooled.write(data)
    spooled.seek(0)
    return spooled


class _Pickler(pickle.Pickler):
    """Pickles moto objects: fresh locks for locks, S3 bodies to blob files."""

    def __init__(self, file: BinaryIO, blobs: _Blobs):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.blobs = blobs
        self.fake_key = _fake_key_class()

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is _LOCK_TYPE:
            return threading.Lock, ()
        if kind is _RLOCK_TYPE:
            return threading.RLock, ()
        if kind is threading.Condition:
            return threading.Condition, ()
        if kind is threading.Event:
            return _new_event, (obj.is_set(),)
        # Weak dictionaries (moto's Lambda index): their entries, held strongly elsewhere.
        if kind is weakref.WeakValueDictionary:
            return _weak_values, (dict(obj.items()),)
        if kind is weakref.WeakKeyDictionary:
            return _weak_keys, (dict(obj.items()),)
        if self.fake_key is not None and isinstance(obj, self.fake_key):
            state = dict(obj.__dict__)
            state.pop("_value_buffer", None)
            state.pop("lock", None)
            blob, inline = self.blobs.save(obj)
            if blob is not None:
                state["_emu_blob"] = blob
            return (
                _restore_key,
                (kind, blob, state.get("_max_buffer_size"), inline),
                state,
                None,
                None,
                _set_key_state,
            )
        if isinstance(obj, threading.Thread):
            # moto's Batch jobs are threads: keep the job, not the (unpicklable) thread machinery.
            state = {k: v for k, v in obj.__dict__.items() if k not in _THREAD_INTERNALS}
            return _restore_thread, (kind,), state, None, None, _set_thread_state
        for name in ("stdout", "stderr", "stdin"):
            if obj is getattr(sys, name) or obj is getattr(sys, f"__{name}__"):
                return _std_stream, (name,)
        if kind is collections.defaultdict:
            return _defaultdict_reduction(obj)
        if kind is tempfile.SpooledTemporaryFile:
            out = io.BytesIO()
            _copy_buffer(obj, out)
            return _spooled, (out.getvalue(), obj._max_size)
        return NotImplemented


def _defaultdict_reduction(obj: collections.defaultdict) -> Any:
    """A defaultdict whose factory is a local lambda such as ``lambda: {}``: use the type it makes."""
    factory = obj.default_factory
    name = getattr(factory, "__qualname__", "")
    if factory is None or ("<lambda>" not in name and "<locals>" not in name):
        return NotImplemented
    try:
        sample = factory()
    except Exception:
        return NotImplemented
    if type(sample) not in (dict, list, set, int, float, str, tuple) or sample:
        return NotImplemented
    return collections.defaultdict, (type(sample),), None, None, iter(obj.items())


def _dumps(obj: Any, blobs: _Blobs) -> bytes:
    out = io.BytesIO()
    _Pickler(out, blobs).dump(obj)
    return out.getvalue()


@dataclass
class _Pickled:
    """A backend pickled on its own (the service as a whole did not pickle)."""

    payload: bytes


@dataclass
class _Partial:
    """A backend saved attribute by attribute (it did not pickle as a whole)."""

    attributes: dict[str, bytes]


# ---- which state there is ----------------------------------------------------------------------


def backends_in_use() -> Iterator[tuple[str, Any]]:
    """``("module:attribute", BackendDict)`` of every moto service that holds state."""
    from moto.core.base_backend import BackendDict

    for backend_dict in list(BackendDict._instances):
        module = sys.modules.get(backend_dict.backend.__module__)
        candidates = [module] if module is not None else []
        candidates += [m for n, m in list(sys.modules.items()) if n.startswith("moto.") and m is not module]
        for candidate in candidates:
            attribute = next((n for n, v in vars(candidate).items() if v is backend_dict), None)
            if attribute is not None:
                yield f"{candidate.__name__}:{attribute}", backend_dict
                break


def _tree(backend_dict: Any) -> dict[str, dict[str, Any]]:
    return {account: dict(regions.items()) for account, regions in backend_dict.items()}


def _dump_service(name: str, backend_dict: Any, blobs: _Blobs, report: WriteReport) -> bytes:
    tree = _tree(backend_dict)
    try:
        return _dumps(tree, blobs)
    except Exception:  # anything a pickler raises means "try smaller pieces"
        pass
    fallback: dict[str, dict[str, Any]] = {}
    for account, regions in tree.items():
        for region, backend in regions.items():
            try:
                leaf: Any = _Pickled(_dumps(backend, blobs))
            except Exception:
                attributes = {}
                for attribute, value in vars(backend).items():
                    try:
                        attributes[attribute] = _dumps(value, blobs)
                    except Exception as error:
                        report.skipped.append(
                            f"{name} {account}/{region}.{attribute}: {type(error).__name__}: {error}"
                        )
                leaf = _Partial(attributes)
            fallback.setdefault(account, {})[region] = leaf
    return pickle.dumps(fallback, protocol=pickle.HIGHEST_PROTOCOL)


# ---- the file ----------------------------------------------------------------------------------


def _write_record(out: BinaryIO, name: str, payload: bytes) -> None:
    encoded = name.encode()
    out.write(struct.pack(">I", len(encoded)) + encoded + struct.pack(">Q", len(payload)))
    out.write(payload)


def _read_exact(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise SnapshotError("the snapshot is truncated")
    return data


def _records(source: BinaryIO) -> Iterator[tuple[str, bytes]]:
    if source.read(len(MAGIC)) != MAGIC:
        raise SnapshotError("not an emulator snapshot (wrong header)")
    while True:
        (name_size,) = struct.unpack(">I", _read_exact(source, 4))
        name = _read_exact(source, name_size).decode()
        (size,) = struct.unpack(">Q", _read_exact(source, 8))
        yield name, _read_exact(source, size)
        if name == END:
            return


def write_snapshot(directory: Path, seq: int) -> WriteReport:
    """Write every moto service's state to ``directory`` atomically; return what was written.

    The new file replaces ``state.pickle`` by a rename only once complete; blob files no
    snapshot refers to any more are removed afterwards.
    """
    started = time.perf_counter()
    report = WriteReport(seq=seq)
    blobs_dir = directory / BLOBS_NAME
    blobs_dir.mkdir(parents=True, exist_ok=True)
    blobs = _Blobs(blobs_dir, report)
    target = directory / SNAPSHOT_NAME
    tmp = directory / f".{SNAPSHOT_NAME}.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        out.write(MAGIC)
        _write_record(out, HEADER, pickle.dumps({"seq": seq, "written_at": time.time()}))
        for name, backend_dict in backends_in_use():
            _write_record(out, name, _dump_service(name, backend_dict, blobs, report))
        _write_record(out, END, b"")
        report.bytes = out.tell()
    os.replace(tmp, target)
    blobs.collect()
    report.seconds = time.perf_counter() - started
    return report


def read_header(directory: Path) -> dict:
    """The header of the snapshot in ``directory`` (its ``seq`` and ``written_at``)."""
    with open(directory / SNAPSHOT_NAME, "rb") as source:
        name, payload = next(_records(source))
        if name != HEADER:
            raise SnapshotError("the snapshot has no header record")
        return pickle.loads(payload)


def _materialize(leaf: Any, account_backend: Any, region: str, label: str, report: RestoreReport) -> Any:
    if isinstance(leaf, _Pickled):
        return pickle.loads(leaf.payload)
    if isinstance(leaf, _Partial):
        backend = account_backend[region]  # a fresh backend, then what was saved on top
        for attribute, payload in leaf.attributes.items():
            try:
                setattr(backend, attribute, pickle.loads(payload))
            except Exception as error:
                report.warnings.append(f"{label}.{attribute} not restored: {type(error).__name__}: {error}")
        return backend
    return leaf


def restore(directory: Path) -> RestoreReport:
    """Load the snapshot in ``directory`` into moto's backends.

    Raises :class:`SnapshotError` when the file as a whole is unreadable (then nothing was
    restored); a service that does not load is reported in ``failed`` and left empty.
    Messages in flight become visible again (SQS: a consumer that did not delete a message in
    time gets it again).
    """
    global _restore_blobs
    report = RestoreReport()
    try:
        with open(directory / SNAPSHOT_NAME, "rb") as source:
            records = list(_records(source))
    except (OSError, struct.error, UnicodeDecodeError) as error:
        raise SnapshotError(f"cannot read the snapshot: {error}") from error
    if not records or records[0][0] != HEADER or records[-1][0] != END:
        raise SnapshotError("the snapshot is incomplete (no header or end record)")
    try:
        report.seq = int(pickle.loads(records[0][1])["seq"])
    except Exception as error:
        raise SnapshotError(f"unreadable snapshot header: {error}") from error
    _restore_blobs = directory / BLOBS_NAME
    _restore_warnings.clear()
    try:
        for name, payload in records[1:-1]:
            try:
                module_name, attribute = name.split(":", 1)
                backend_dict = getattr(importlib.import_module(module_name), attribute)
                tree = pickle.loads(payload)
                for account, regions in tree.items():
                    account_backend = backend_dict[account]
                    for region, leaf in regions.items():
                        label = f"{name} {account}/{region}"
                        try:
                            backend = _materialize(leaf, account_backend, region, label, report)
                        except Exception as error:
                            report.warnings.append(f"{label} not restored: {type(error).__name__}: {error}")
                            continue
                        dict.__setitem__(account_backend, region, backend)
                _after_restore(name, backend_dict)
                report.services.append(name)
            except Exception as error:
                report.failed.append(f"{name}: {type(error).__name__}: {error}")
    finally:
        report.warnings.extend(_restore_warnings)
        _restore_blobs = None
    return report


def _after_restore(name: str, backend_dict: Any) -> None:
    """Make messages that were in flight visible again (SQS), as after a visibility timeout."""
    if not name.startswith("moto.sqs."):
        return
    for regions in backend_dict.values():
        for backend in regions.values():
            for queue in getattr(backend, "queues", {}).values():
                for message in getattr(queue, "_messages", []):
                    message.visible_at = 0.0
                pending = getattr(queue, "_pending_messages", None)
                if pending is not None:
                    pending.clear()

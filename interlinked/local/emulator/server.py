"""The emulator process: moto's server app, in-process, with its state snapshotted to disk.

Mechanism (and why): moto keeps everything in Python objects, so the emulator pickles them.
After any request that may change state (every method but GET/HEAD/OPTIONS) the state is
*dirty*; at most once per ``interval`` a snapshot is taken in a **forked child**: the server
pauses only for the ``fork()`` (copy-on-write gives the child a frozen, consistent copy of the
objects), and the child pickles and writes while the server goes on serving. The new file
replaces the old one by a rename, so a crash never leaves half a snapshot. SIGTERM → stop
serving, wait for a snapshot in progress, write a final one in-process, exit.

moto's recorder/replay was the alternative and is worse for this: it appends every request
(reads and receives too, bodies base64 in JSON) to a log that only grows, and replaying
re-executes them, so SQS receives change state again, message ids, receipt handles and
timestamps come out different, and start-up time grows with the history.

A write acknowledged at time t is on disk once the first snapshot forked after t is written:
at most ``interval`` + the time of two snapshots later (``/_emulator/status`` reports the
numbers; ``POST /_emulator/flush`` waits until everything acknowledged so far is on disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import statistics
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from interlinked.local.emulator import iam, snapshot, sqs_speed

log = logging.getLogger("interlinked.emulator")
LOCK_NAME = "lock"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONTROL_PREFIX = "/_emulator/"
READ_ONLY_OPERATIONS = ("Get", "List", "Describe", "Query", "Scan", "BatchGet")


class Persistence:
    """Counts state-changing requests and snapshots them to ``directory`` in forked children."""

    def __init__(self, directory: Path, *, interval: float = 1.0):
        self.directory = directory
        self.interval = interval
        self.completed = 0  # state-changing requests answered so far
        self.persisted = 0  # the highest `completed` a written snapshot covers
        self.snapshots = 0
        self.pauses: list[float] = []  # seconds the server stood still in fork(), last 1000
        self.last_snapshot_seconds = 0.0
        self.snapshot_seconds: list[float] = []  # how long the child took, last 1000
        self.last_error: str | None = None
        self.listen_fd: int | None = None
        # Set before the final snapshot: a change finished after it is answered 503 (not lost).
        self.closing = False
        self._cond = threading.Condition()
        self._flush_requested = False
        self._stopping = False
        self._logged: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="snapshotter", daemon=True)

    # -- counting ------------------------------------------------------------------------------
    def changed(self) -> None:
        with self._cond:
            self.completed += 1
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Snapshot now; True once everything answered before this call is on disk."""
        with self._cond:
            target = self.completed
            self._flush_requested = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self.persisted >= target or self._stopping, timeout=timeout
            ) and (self.persisted >= target)

    def status(self) -> dict[str, Any]:
        pauses = sorted(self.pauses)
        return {
            "completed": self.completed,
            "persisted": self.persisted,
            "dirty": self.completed != self.persisted,
            "snapshots": self.snapshots,
            "interval_seconds": self.interval,
            "last_snapshot_seconds": self.last_snapshot_seconds,
            "pause_p50_seconds": statistics.median(pauses) if pauses else None,
            "pause_p95_seconds": pauses[int(0.95 * (len(pauses) - 1))] if pauses else None,
            "pause_max_seconds": pauses[-1] if pauses else None,
            "last_error": self.last_error,
            "state_dir": str(self.directory),
            "recent_pauses_seconds": self.pauses[-100:],
            "recent_snapshot_seconds": self.snapshot_seconds[-100:],
        }

    # -- the snapshot loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (waiting for a snapshot in progress) and write a final snapshot."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self.closing = True
        # Forked like the others: request threads still running cannot change it while it is written.
        target = self.completed
        if target != self.persisted:
            self._fork_snapshot()
        if self.persisted < target:
            log.error("final snapshot failed: %s", self.last_error)
        else:
            log.info("state on disk (changes up to #%d) in %s", self.persisted, self.directory)

    def _loop(self) -> None:
        last_start = 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self.completed != self.persisted)
                if self._stopping:
                    return
                delay = last_start + self.interval - time.monotonic()
                if delay > 0 and not self._flush_requested:
                    self._cond.wait_for(lambda: self._stopping or self._flush_requested, timeout=delay)
                    if self._stopping:
                        return
                self._flush_requested = False
            last_start = time.monotonic()
            self._fork_snapshot()

    def _fork_snapshot(self) -> None:
        read_end, write_end = os.pipe()
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        # Taken while fork() holds the GIL: no request can be half-way through a Python step.
        seq = self.completed
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: write and leave, touching nothing the server shares
            os.close(read_end)
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
                if self.listen_fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(self.listen_fd)  # a dead server's port must free up at once
                report = snapshot.write_snapshot(self.directory, seq)
                message = json.dumps({"ok": True, **report.__dict__})
                code = 0
            except BaseException:  # the parent logs it
                message = json.dumps({"ok": False, "error": traceback.format_exc(limit=8)})
            with contextlib.suppress(OSError):
                os.write(write_end, message.encode())
            os._exit(code)
        pause = time.perf_counter() - started
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        os.close(write_end)
        self.pauses = [*self.pauses, pause][-1000:]
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        try:
            result = json.loads(b"".join(chunks) or b"{}")
        except ValueError:
            result = {}
        if status == 0 and result.get("ok"):
            result["seconds"] = time.perf_counter() - started  # fork → on disk, as the server sees it
            self._finished(seq, result)
        else:
            error = result.get("error") or f"snapshot child ended with status {status}"
            self.last_error = error
            self._log_once(logging.ERROR, f"snapshot failed (will retry): {error}")

    def _finished(self, seq: int, result: dict) -> None:
        for skipped in result.get("skipped", []):
            self._log_once(logging.WARNING, f"not saved (does not pickle): {skipped}")
        with self._cond:
            self.persisted = max(self.persisted, seq)
            self.snapshots += 1
            self.last_snapshot_seconds = float(result.get("seconds", 0.0))
            self.snapshot_seconds = [*self.snapshot_seconds, self.last_snapshot_seconds][-1000:]
            self.last_error = None
            self._cond.notify_all()

    def _log_once(self, level: int, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.log(level, message)


class _App:
    """WSGI middleware: counts state-changing requests and answers ``/_emulator/...``."""

    def __init__(self, app: Any, persistence: Persistence):
        self.app = app
        self.persistence = persistence

    def __call__(self, environ: dict, start_response: Any) -> Any:
        iam.forget_caller()  # a kept-alive connection serves several requests on one thread
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(path[len(CONTROL_PREFIX) :], environ, start_response)
        # JSON-protocol reads (DynamoDB GetItem/Query/Scan, SQS GetQueueUrl, ...) change nothing.
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if environ.get("REQUEST_METHOD", "GET") in READ_ONLY_METHODS or operation.startswith(
            READ_ONLY_OPERATIONS
        ):
            return self.app(environ, start_response)
        answer: list[Any] = []

        def hold(status: str, headers: list, exc_info: Any = None) -> Any:
            answer[:] = [status, headers, exc_info]
            return lambda _data: None

        try:
            result = self.app(environ, hold)
        except BaseException:
            self.persistence.changed()
            raise
        changed = True
        if operation == "ReceiveMessage" and answer:
            # An empty receive (the services' idle polling) changes nothing: no snapshot for it.
            body = b"".join(result)
            if hasattr(result, "close"):
                result.close()
            result, changed = [body], b"ReceiptHandle" in body
        if changed:
            # Counted once the app has done its work, before the client sees the answer.
            self.persistence.changed()
        if (changed and self.persistence.closing) or not answer:
            # Done after the final snapshot was taken: not saved, so not acknowledged either.
            if hasattr(result, "close"):
                result.close()
            data = b"the emulator is stopping; retry"
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
            )
            return [data]
        start_response(*answer)
        return result

    def _control(self, what: str, environ: dict, start_response: Any) -> list[bytes]:
        code = "200 OK"
        if what == "status":
            body = self.persistence.status()
        elif what == "flush" and environ.get("REQUEST_METHOD") == "POST":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            timeout = float(query.get("timeout", ["60"])[0])
            done = self.persistence.flush(timeout)
            body = self.persistence.status()
            if not done:
                code = "504 Gateway Timeout"
        else:
            code, body = "404 Not Found", {"error": "known: GET /_emulator/status, POST /_emulator/flush"}
        data = json.dumps(body).encode()
        start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


# ---- start-up ----------------------------------------------------------------------------------


def lock_state_dir(directory: Path, *, timeout: float = 60.0) -> int:
    """Hold ``directory/lock`` for the life of this process (and its snapshot children).

    A snapshot child of an emulator that was killed may still be writing: wait for it rather
    than have two writers. Two live emulators on one directory are refused.
    """
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"emulator: {directory} is in use by another emulator process for {timeout:.0f} s; "
                    "stop it (interlinked down) or use another state directory"
                ) from None
            if not announced:
                log.warning("waiting for another process using %s to finish (a snapshot writer?)", directory)
                announced = True
            time.sleep(0.2)


def _set_aside(directory: Path, why: str) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = directory / f"{snapshot.SNAPSHOT_NAME}.corrupt-{stamp}"
    os.replace(directory / snapshot.SNAPSHOT_NAME, target)
    blobs = directory / snapshot.BLOBS_NAME
    if blobs.exists():
        os.replace(blobs, directory / f"{snapshot.BLOBS_NAME}.corrupt-{stamp}")
    log.error(
        "the saved emulator state could not be read (%s): set aside as %s; starting EMPTY. "
        "Nothing else was deleted.",
        why,
        target,
    )


def restore_state(directory: Path) -> int:
    """Restore the snapshot in ``directory`` if there is one; return the sequence it covered."""
    for leftover in list(directory.glob(".*.tmp")) + list((directory / snapshot.BLOBS_NAME).glob(".*.tmp")):
        leftover.unlink(missing_ok=True)
    if not (directory / snapshot.SNAPSHOT_NAME).exists():
        log.info("no saved state in %s: starting empty", directory)
        return 0
    started = time.perf_counter()
    try:
        report = snapshot.restore(directory)
    except snapshot.SnapshotError as error:
        _set_aside(directory, str(error))
        return 0
    except Exception as error:  # never refuse to start over a bad file
        _set_aside(directory, f"{type(error).__name__}: {error}")
        return 0
    for warning in report.warnings:
        log.warning("restore: %s", warning)
    if report.failed:
        copy = directory / f"{snapshot.SNAPSHOT_NAME}.partial-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.copy2(directory / snapshot.SNAPSHOT_NAME, copy)
        for failed in report.failed:
            log.error("restore: service not restored, it starts empty: %s (file copied to %s)", failed, copy)
    log.info(
        "restored %d service(s) from %s in %.2f s: %s",
        len(report.services),
        directory,
        time.perf_counter() - started,
        ", ".join(
            name.split(":")[0].removeprefix("moto.").removesuffix(".models") for name in report.services
        ),
    )
    return report.seq


def serve(host: str, port: int, directory: Path, *, interval: float = 1.0, enforce_iam: bool = False) -> None:
    """Run the emulator until SIGTERM/SIGINT, then write the final snapshot and return.

    ``enforce_iam``: check signatures and IAM policies on every request (:mod:`.iam`).
    """
    os.environ.setdefault("MOTO_PORT", str(port))
    directory.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_state_dir(directory)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    snapshot.install_blob_ids()
    seq = restore_state(directory)
    iam.enable(enforce_iam)  # after the restore: the admin user goes into the restored IAM state
    iam.ensure_admin()  # also without enforcement: unauthenticated writes are attributed to it
    iam.track_writers()
    sqs_speed.install()  # moto's SQS without its walks of the whole queue per message
    persistence = Persistence(directory, interval=interval)
    persistence.completed = persistence.persisted = seq

    from interlinked.local.dynamodb_atomic import serialize_dynamodb

    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True  # as moto_server does
    # DynamoDB's conditional writes are atomic on AWS; moto's are only if they run one at a time.
    server = make_server(
        host,
        port,
        _App(serialize_dynamodb(moto_app), persistence),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    persistence.listen_fd = server.socket.fileno()

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)  # no logging in a signal handler: it may hold the logging lock
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    persistence.start()
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info(
        "emulator (moto) on http://%s:%d, state in %s (snapshots at most every %.1f s)",
        host,
        port,
        directory,
        interval,
    )
    while not stop.wait(1.0):
        if not serving.is_alive():
            log.error("the HTTP server stopped on its own")
            break
    if received:
        log.info("signal %d: stopping, writing the final snapshot", received[0])
    server.shutdown()
    server.server_close()
    persistence.listen_fd = None
    persistence.stop()
    os.close(lock_fd)

"""The durable emulator's cost: server pause per snapshot and write → on-disk latency.

    .venv/bin/python bench/bench_emulator_snapshot.py [--objects 10000] [--messages 1000] [--large-mb 500]

Starts its own emulator (``python -m interlinked.local.emulator``, snapshots at most every 1 s) on
a free port with a temporary state directory, loads N small objects and M queued messages, then:

- pause: how long the server stands still in ``fork()`` per snapshot (reported by the emulator)
  while a trickle of writes keeps the state dirty, and the latency a client sees meanwhile;
- write → durable: a put is acknowledged, then the time until the emulator reports a snapshot
  that covers it (no flush: the natural cadence, i.e. the loss window of a ``kill -9``);
- the same for one large object (multipart upload), and the restart (restore) time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, summarise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    def __init__(self, state_dir: Path, log: Path):
        self.state_dir, self.log, self.port = state_dir, log, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        started = time.monotonic()
        command = [sys.executable, "-m", "interlinked.local.emulator", "--port", str(self.port)]
        command += ["--state-dir", str(self.state_dir), "--interval", "1"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"emulator exited; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/config", timeout=2):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.1)

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_emulator/status", timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> float:
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=300)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self, service: str):
        return boto3.client(
            service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test",
            aws_secret_access_key="test", config=Config(max_pool_connections=16, read_timeout=600),
        )  # fmt: skip


def _durable_latency(emu: Emulator, write) -> float:
    """Run ``write``; seconds from its acknowledgement until a snapshot covers it."""
    write()
    acknowledged = time.monotonic()
    target = emu.status()["completed"]
    while emu.status()["persisted"] < target:
        time.sleep(0.01)
    return time.monotonic() - acknowledged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--large-mb", type=int, default=500)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    emu = Emulator(workdir / "aws", workdir / "emulator.log")
    rows: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    try:
        emu.start()
        s3, sqs = emu.client("s3"), emu.client("sqs")
        s3.create_bucket(Bucket="bench")
        queue = sqs.create_queue(QueueName="bench")["QueueUrl"]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"obj/{i:06d}", Body=os.urandom(1024)),
                          range(args.objects)))  # fmt: skip
            list(pool.map(lambda i: sqs.send_message(QueueUrl=queue, MessageBody=f"message {i} " + "x" * 200),
                          range(args.messages)))  # fmt: skip
        notes.append(
            f"loaded {args.objects} objects of 1 KB + {args.messages} messages in {time.monotonic() - started:.0f} s"
        )

        # Pause and client latency while snapshots run back to back (a trickle keeps the state dirty).
        before = emu.status()["snapshots"]
        stop = threading.Event()
        latencies: list[float] = []

        def trickle() -> None:
            i = 0
            while not stop.is_set():
                s3.put_object(Bucket="bench", Key=f"trickle/{i}", Body=b"t")
                i += 1
                time.sleep(0.1)

        writer = threading.Thread(target=trickle, daemon=True)
        writer.start()
        reader = emu.client("s3")
        until = time.monotonic() + 15
        while time.monotonic() < until:
            t0 = time.monotonic()
            reader.head_object(Bucket="bench", Key="obj/000001")
            latencies.append(time.monotonic() - t0)
        stop.set()
        writer.join()
        status = emu.status()
        taken = status["snapshots"] - before
        rows[f"pause in fork() per snapshot ({taken} snapshots)"] = summarise(
            status["recent_pauses_seconds"][-taken:]
        )
        rows["snapshot fork → on disk"] = summarise(status["recent_snapshot_seconds"][-taken:])
        rows["client HEAD latency meanwhile"] = summarise(latencies)
        durable = []
        for i in range(args.probes):
            time.sleep(random.uniform(0, 1.2))
            durable.append(
                _durable_latency(emu, lambda i=i: s3.put_object(Bucket="bench", Key=f"probe/{i}", Body=b"p"))
            )
        rows["small put: ack → durable (no flush)"] = summarise(durable)

        # One large object: multipart upload from a file, then how long until it is on disk.
        large = workdir / "large.bin"
        with large.open("wb") as out:
            for _ in range(args.large_mb):
                out.write(os.urandom(1024 * 1024))
        config = TransferConfig(
            multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=2
        )
        t0 = time.monotonic()
        seconds = _durable_latency(
            emu, lambda: s3.upload_file(str(large), "bench", "large.bin", Config=config)
        )
        upload = time.monotonic() - t0 - seconds
        large.unlink()
        rows[f"{args.large_mb} MB object: ack → durable"] = summarise([seconds])
        notes.append(f"{args.large_mb} MB upload itself: {upload:.1f} s")
        after_large = emu.status()["snapshots"]
        probe = [_durable_latency(emu, lambda i=i: s3.put_object(Bucket="bench", Key=f"after/{i}", Body=b"a"))
                 for i in range(5)]  # fmt: skip
        rows["small put after the large one: ack → durable"] = summarise(probe)
        status = emu.status()
        rows["pause in fork() with the large object"] = summarise(
            status["recent_pauses_seconds"][-(status["snapshots"] - after_large) :]
        )

        rows["SIGTERM → final snapshot → exit"] = summarise([emu.stop()])
        rows["restart: restore until ready"] = summarise([emu.start()])
        size = sum(p.stat().st_size for p in (workdir / "aws").rglob("*") if p.is_file())
        notes.append(f"state on disk: {size / 2**20:.0f} MB (state.pickle + blobs/)")
    finally:
        emu.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(
        f"emulator snapshots: {args.objects} objects + {args.messages} messages, {args.large_mb} MB object",
        rows,
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()

"""The job's copy at ``results/{job_id}/job.json`` on a real moto server (S3 over HTTP).

Changes of one job can reach S3 in any order; the copy must end at the newest version, and an
older version arriving late must not overwrite it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from blocks.s3 import ObjectStore
from flows.jobs import machine
from flows.jobs.client import VERSION_METADATA, job_json_key, write_copy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
    moto_server = Path(sys.executable).with_name("moto_server")
    port = _free_port()
    process = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        client = boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        client.create_bucket(Bucket="jobs-copy-test")
        yield ObjectStore("jobs-copy-test", client)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _versions(job, count: int):
    versions = []
    for number in range(1, count + 1):
        versions.append(job.model_copy(update={"version": number, "updated_at": f"v{number}"}))
    return versions


def test_the_copy_keeps_the_newest_version(bucket):
    v1, v2, v3 = _versions(machine.new_job("script", known_types=["script"]), 3)
    assert write_copy(bucket, v1) is True
    assert write_copy(bucket, v3) is True
    assert write_copy(bucket, v2) is False  # late and older: skipped
    assert write_copy(bucket, v3) is False  # the same version again: nothing to do
    key = job_json_key(v1.id)
    assert key == f"results/{v1.id}/job.json"
    stored = json.loads(bucket.read_bytes(key))
    assert stored["version"] == 3 and stored["updatedAt"] == "v3"
    assert bucket.head(key)["Metadata"][VERSION_METADATA] == "3"


def test_a_write_that_loses_the_conditional_race_looks_again(bucket):
    v1, v2, v3 = _versions(machine.new_job("script", known_types=["script"]), 3)
    write_copy(bucket, v1)

    class Interleaved:
        """Between our HEAD and our PUT, another change writes version 3."""

        def __init__(self, store: ObjectStore):
            self.store, self.heads = store, 0

        def head(self, key):
            reply = self.store.head(key)
            self.heads += 1
            if self.heads == 1:
                write_copy(self.store, v3)
            return reply

        def put(self, *args, **kwargs):
            return self.store.put(*args, **kwargs)

    assert write_copy(Interleaved(bucket), v2) is False  # the conditional PUT lost, the second look skips
    assert json.loads(bucket.read_bytes(job_json_key(v1.id)))["version"] == 3

"""Objects in a bucket, the way flows and services use them.

:class:`ObjectStore` is a bucket plus the operations this project needs — JSON and text in and
out, "is it there", conditional writes, listing, files — each written once, with the missing and
conflict cases answered rather than raised. :func:`data_store` and :func:`analysis_store` load it
from the saved ``S3Bucket`` blocks (the same credentials and endpoint every flow uses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from blocks.clients import aws_client
from blocks.errors import is_conflict, is_missing

_MISSING = object()


class ObjectMissing(LookupError):
    """The object does not exist (``read_*`` without a default)."""


class WriteConflict(RuntimeError):
    """A conditional write lost: the object exists (``if_none_match``) or changed (``if_match``)."""


@dataclass
class ObjectStore:
    """A bucket and a client for it."""

    bucket: str
    client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = aws_client("s3")

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # -- reading ---------------------------------------------------------------------------------
    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata (``ETag``, ``ContentLength``, ...), or None when it does not exist."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if is_missing(error):
                return None
            raise

    def exists(self, key: str) -> bool:
        """An object at ``key``; for a key ending in ``/``, anything under that prefix."""
        if key.endswith("/"):
            return self.prefix_exists(key)
        return self.head(key) is not None

    def prefix_exists(self, prefix: str) -> bool:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return listing.get("KeyCount", 0) > 0

    def get(self, key: str, *, version_id: str | None = None) -> dict[str, Any]:
        """The ``GetObject`` reply; :class:`ObjectMissing` when there is no such object."""
        parameters: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            parameters["VersionId"] = version_id
        try:
            return self.client.get_object(**parameters)
        except ClientError as error:
            if is_missing(error):
                raise ObjectMissing(self.uri(key)) from None
            raise

    def read_bytes(self, key: str, default: Any = _MISSING, *, version_id: str | None = None) -> Any:
        try:
            return self.get(key, version_id=version_id)["Body"].read()
        except ObjectMissing:
            if default is _MISSING:
                raise
            return default

    def read_text(self, key: str, default: Any = _MISSING) -> Any:
        data = self.read_bytes(key, None if default is not _MISSING else _MISSING)
        return default if data is None else data.decode()

    def read_json(self, key: str, default: Any = _MISSING) -> Any:
        data = self.read_bytes(key, None if default is not _MISSING else _MISSING)
        return default if data is None else json.loads(data)

    def keys(self, prefix: str, *, delimiter: str | None = None) -> Iterator[str]:
        """Every key under ``prefix`` (with ``delimiter="/"``: only that level)."""
        parameters: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            parameters["Delimiter"] = delimiter
        for page in self.client.get_paginator("list_objects_v2").paginate(**parameters):
            for item in page.get("Contents", []):
                yield item["Key"]

    def download(self, key: str, path: Path | str) -> Path:
        try:
            self.client.download_file(self.bucket, key, str(path))
        except ClientError as error:
            if is_missing(error):
                raise ObjectMissing(self.uri(key)) from None
            raise
        return Path(path)

    # -- writing ---------------------------------------------------------------------------------
    def put(
        self,
        key: str,
        body: bytes | str,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
        **extra: Any,
    ) -> str:
        """Write an object; returns its ETag. ``if_none_match`` writes only a new object and
        ``if_match`` only over that ETag; losing either raises :class:`WriteConflict`."""
        parameters: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body.encode() if isinstance(body, str) else body,
            "ContentType": content_type,
            **extra,
        }
        if if_none_match:
            parameters["IfNoneMatch"] = "*"
        if if_match:
            parameters["IfMatch"] = if_match
        try:
            return self.client.put_object(**parameters).get("ETag", "").strip('"')
        except ClientError as error:
            if (if_none_match or if_match) and is_conflict(error):
                raise WriteConflict(self.uri(key)) from None
            raise

    def put_text(self, key: str, text: str, **options: Any) -> str:
        return self.put(key, text, content_type="text/plain; charset=utf-8", **options)

    def put_json(self, key: str, value: Any, *, indent: int | None = None, **options: Any) -> str:
        return self.put(
            key, json.dumps(value, indent=indent, default=str), content_type="application/json", **options
        )

    def upload(self, path: Path | str, key: str, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra)

    def copy(self, source: str, target: str) -> None:
        """Server-side copy of ``source`` to ``target`` within this bucket."""
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source}
            )
        except ClientError as error:
            if is_missing(error):
                raise ObjectMissing(self.uri(source)) from None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def location_allowed(bucket: str, key: str, allowed: list[str]) -> bool:
    """Whether ``s3://bucket/key`` lies inside an entry of an allow-list: ``'*'`` (anywhere), a whole
    ``'bucket'``, or ``'bucket/prefix'`` (matched on whole path segments, so ``'b/lab1'`` does not
    allow ``lab10/``). A key with a ``.`` or ``..`` segment is never allowed: S3 keeps such keys
    literally, but whoever reads the allow-list would not expect them to match."""
    key = key.lstrip("/")
    if any(segment in (".", "..") for segment in key.split("/")):
        return False
    for entry in allowed:
        if entry == "*":
            return True
        name, _, prefix = entry.partition("/")
        if name != bucket:
            continue
        prefix = prefix.strip("/")
        if not prefix or key == prefix or key.startswith(prefix + "/"):
            return True
    return False


@lru_cache(maxsize=8)
def store_for_block(block_name: str) -> ObjectStore:
    """The :class:`ObjectStore` of a saved ``S3Bucket`` block (cached per process)."""
    from prefect_aws import S3Bucket

    block = S3Bucket.load(block_name, _sync=True)
    return ObjectStore(block.bucket_name, aws_client("s3", credentials=block.credentials))


# A forked child builds its own (its parent's connections must not be shared).
os.register_at_fork(after_in_child=store_for_block.cache_clear)


def data_store() -> ObjectStore:
    """The data bucket: scripts, jobs, results, logs, experiments, caches."""
    from blocks.names import DATA_BUCKET

    return store_for_block(DATA_BUCKET)


def analysis_store() -> ObjectStore:
    """The analysis bucket: group submissions (``{group}/inputs|configs|submissions|results``)."""
    from blocks.names import ANALYSIS_BUCKET

    return store_for_block(ANALYSIS_BUCKET)

"""In-process primitives of the analysis service: a received message, single-flight calls, the
in-memory result cache."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    """A received SQS message and its bookkeeping."""

    raw: dict[str, Any]
    received: float = field(default_factory=time.monotonic)
    extended: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.raw["MessageId"]

    @property
    def receipt(self) -> str:
        return self.raw["ReceiptHandle"]

    @property
    def body(self) -> str:
        return self.raw.get("Body", "")

    @property
    def receive_count(self) -> int:
        return int(self.raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))

    @property
    def group_id(self) -> str | None:
        return self.raw.get("Attributes", {}).get("MessageGroupId")

    @property
    def queue_ms(self) -> float | None:
        sent = self.raw.get("Attributes", {}).get("SentTimestamp")
        return None if sent is None else max(0.0, time.time() * 1000 - int(sent))


class SingleFlight:
    """Concurrent calls with the same key run the function once and share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Any]] = {}

    def do(self, key: str, function):
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = {"event": threading.Event()}
        if not leader:
            call["event"].wait()
            if "error" in call:
                raise call["error"]
            return call["value"], False
        try:
            call["value"] = function()
            return call["value"], True
        except BaseException as error:
            call["error"] = error
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call["event"].set()


class MemoryResults:
    """LRU of result bodies (JSON text) by cache key, bounded in bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        size = len(value)
        if size > self.budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.budget and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    @property
    def size(self) -> tuple[int, int]:
        with self._lock:
            return len(self._items), self._bytes

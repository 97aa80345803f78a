"""The journal: ids of the messages this host answered, so a restart never answers one twice."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path


class Journal:
    """Ids of the messages whose response this host published, appended to a local file.

    Each id is written with one ``write(2)`` right after the publish, so it survives the process
    being killed (the data is in the kernel's page cache): a restarted service does not answer a
    redelivered message twice. The file keeps the latest ``keep`` ids.
    """

    def __init__(self, path: Path | None, *, keep: int = 20_000) -> None:
        self.path = path
        self.keep = keep
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._file = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines()[-keep:]:
                if line.strip():
                    self._ids[line.strip()] = None
        self._file = path.open("a", buffering=1)  # line-buffered: one write(2) per id

    def add(self, message_id: str) -> None:
        with self._lock:
            self._ids[message_id] = None
            if self._file is not None:
                self._file.write(message_id + "\n")
            if len(self._ids) > 2 * self.keep:
                self._compact()

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._ids

    def _compact(self) -> None:
        while len(self._ids) > self.keep:
            self._ids.popitem(last=False)
        if self._file is not None and self.path is not None:
            self._file.close()
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text("".join(f"{message_id}\n" for message_id in self._ids))
            os.replace(temporary, self.path)
            self._file = self.path.open("a", buffering=1)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

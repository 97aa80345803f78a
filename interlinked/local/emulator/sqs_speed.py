"""moto's SQS, the same behaviour with less work per call (imports moto; used by :mod:`.server` only).

moto's SQS backend walks the whole queue far more often than it needs to, so a queue of a few
thousand messages made the emulator the slowest part of the event bridge's path (profiled with
py-spy on ``bench/bench_bridge_throughput.py``: about 70 % of the emulator's busy time went here,
and almost none into checking signatures and IAM policies). :func:`install` replaces four spots:

- **receive**: for *every* message handed out, moto checks its retention period by computing all
  of the queue's attributes — three of which count the queue's messages, each a walk of the queue
  — so a receive of 10 from a queue of 2,000 walked the queue about 30 times. The check here reads
  the queue's ``MessageRetentionPeriod`` directly (same rule: kept while ``sent + retention > now``).
- **the clock**: moto's ``unix_time()`` builds two ``datetime`` objects per call, and a receive asks
  it twice per message of the queue (is it visible? delayed?). ``time.time()`` gives the same
  seconds since the epoch.
- **GetQueueAttributes** with attribute names computed all attributes up to three times per name;
  once here.
- **DeleteMessage** walked the queue twice per receipt handle, building a list of each message's
  handles; one walk here, with the same outcome (an old receipt handle of a message deletes it; a
  handle already deleted is accepted; an unknown one is refused).

Nothing else changes: IAM enforcement, redrive, visibility, FIFO and the snapshots are untouched.
"""

from __future__ import annotations

import time
from typing import Any

_INSTALLED = "_interlinked_sqs_speed"


def _unix_time(original: Any) -> Any:
    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else original(dt)

    return unix_time


def _unix_time_millis(original: Any) -> Any:
    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else original(dt)

    return unix_time_millis


def _is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
    queue = self.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > time.time()


def _get_queue_attributes(original: Any) -> Any:
    def get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> dict[str, Any]:
        from moto.sqs.exceptions import InvalidAttributeName

        queue = self.get_queue(queue_name)
        if not attribute_names or "All" in attribute_names:
            return original(self, queue_name, attribute_names)
        valid = {*queue.BASE_ATTRIBUTES, *queue.FIFO_ATTRIBUTES, *queue.KMS_ATTRIBUTES}
        for name in attribute_names:
            if name not in valid:
                raise InvalidAttributeName(name)
        known = queue.attributes  # computed once, not once per name
        return {name: known[name] for name in attribute_names if known.get(name) is not None}

    return get_queue_attributes


def _delete_message(self: Any, receipt_handle: str) -> None:
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    if receipt_handle in self.deleted_messages:
        return  # deleted already: accepted again, as moto and SQS do
    for index, message in enumerate(self._messages):
        if message.receipt_handle == receipt_handle or receipt_handle in message._old_receipt_handles:
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            self._messages = self._messages[:index] + self._messages[index + 1 :]
            return
    raise ReceiptHandleIsInvalid()


def install() -> None:
    """Patch moto's SQS backend in this process (idempotent)."""
    from moto.sqs import models

    if getattr(models, _INSTALLED, False):
        return
    models.unix_time = _unix_time(models.unix_time)
    models.unix_time_millis = _unix_time_millis(models.unix_time_millis)
    models.SQSBackend.is_message_valid_based_on_retention_period = _is_message_valid_based_on_retention_period
    models.SQSBackend.get_queue_attributes = _get_queue_attributes(models.SQSBackend.get_queue_attributes)
    models.Queue.delete_message = _delete_message
    setattr(models, _INSTALLED, True)

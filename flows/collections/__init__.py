"""Task collections (seed 002, PyAnamo / PiCaS): named to-do lists of shell tasks, claimed with leases.

- :mod:`.model` — a task, its states, the names it may use, the errors;
- :mod:`.parsing` — tasks from JSON Lines, TSV, or ids + a command template (all-or-nothing);
- :mod:`.store` — the store interface; :mod:`.backends` — :func:`~.backends.open_store`;
- :mod:`.dynamodb` — the DynamoDB backend (conditional-write claims, sharded open index, counters);
- :mod:`.postgres` — the PostgreSQL backend (``SKIP LOCKED`` claims, counters in the same transaction);
- :mod:`.progress` — the throughput (finished per minute over a window) and ETA of ``tasks status``
  and the drain's artifacts;
- :mod:`.client` — what ``interlinked tasks`` calls.
- :mod:`.formats` — PyAnamo lines and PiCaS tokens in (``tasks add --format``) and out (``tasks export``).
"""

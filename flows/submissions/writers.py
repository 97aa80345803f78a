"""Which identity wrote a submit file, and whether that identity may submit for the key's group.

A submission is accepted only under the prefix of the group whose identity wrote it, where the
platform can tell. IAM is the boundary (a group's identity may write only its own prefix:
:func:`interlinked.local.identities.group_policy`, ``infra/terraform/modules/group``); this check
is defence in depth against a policy that grants more than it should.

- **Who wrote it**: S3's event notification names the identity whose request created the object,
  ``Records[].userIdentity.principalId`` (``AWS:<UserId>`` for an IAM user,
  ``AWS:<RoleId>:<session name>`` for an assumed role; CloudTrail's ``userIdentity.principalId``
  is the same without ``AWS:``). The event bridge passes it to the flow as ``writer``.
- **The registry of group identities**: one JSON object per group at
  ``s3://{data}/groups/{group}.json`` = ``{"group", "principal_ids": [<UserId or RoleId>], "arn",
  "source"}``, written by ``interlinked groups add`` (the group's IAM user's UserId) or by
  Terraform's ``modules/group`` (the group role's ``unique_id``). The flow runs may read it and
  not write it; only admins (and Terraform) write it.
- **The decision** (:func:`check_writer`): a writer that is a registered identity of another group
  is refused; a writer that is no group's identity (an admin, a platform service) and an unknown
  writer (the event named none: EventBridge events, a run started by hand) are accepted, as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

REGISTRY_PREFIX = "groups/"
_UNIQUE_ID = re.compile(r"^[A-Za-z0-9+/=,.@_-]{1,128}$")


def registry_key(group: str) -> str:
    """The key of a group's record in the data bucket."""
    return f"{REGISTRY_PREFIX}{group}.json"


def registry_record(group: str, principal_ids: list[str], *, arn: str, source: str) -> dict[str, Any]:
    """A group's record: its name, the unique ids of its identities, their ARN and who wrote it."""
    return {"group": group, "principal_ids": list(principal_ids), "arn": arn, "source": source}


def unique_id(principal: str | None) -> str | None:
    """The IAM unique id in a principalId: ``AWS:AIDA…`` → ``AIDA…``, ``AWS:AROA…:session`` →
    ``AROA…`` (the role, whoever assumed it), CloudTrail's ``AROA…:session`` likewise; None for an
    empty or unreadable value."""
    if not principal or not isinstance(principal, str):
        return None
    found = principal.strip().removeprefix("AWS:").split(":", 1)[0]
    return found if _UNIQUE_ID.match(found) else None


@dataclass(frozen=True)
class Registry:
    """Unique id → the groups it is registered for, and the records that could not be read."""

    groups_of: dict[str, frozenset[str]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def parse_registry(records: dict[str, Any]) -> Registry:
    """The registry from its records (key → decoded JSON, or the exception reading it raised)."""
    groups_of: dict[str, set[str]] = {}
    problems: list[str] = []
    for key, record in sorted(records.items()):
        expected = key.removeprefix(REGISTRY_PREFIX).removesuffix(".json")
        ids = record.get("principal_ids") if isinstance(record, dict) else None
        if (
            not isinstance(record, dict)
            or record.get("group") != expected
            or not isinstance(ids, list)
            or not all(isinstance(i, str) and _UNIQUE_ID.match(i) for i in ids)
        ):
            problems.append(
                f"{key}: not a group record ({{'group': {expected!r}, 'principal_ids': [...]}}): ignored"
            )
            continue
        for principal in ids:
            groups_of.setdefault(principal, set()).add(expected)
    return Registry({k: frozenset(v) for k, v in groups_of.items()}, tuple(problems))


def load_registry(store: Any) -> Registry:
    """Every group record under ``groups/`` of ``store`` (an :class:`blocks.s3.ObjectStore`)."""
    records: dict[str, Any] = {}
    for key in store.keys(REGISTRY_PREFIX):
        if key.endswith(".json") and "/" not in key.removeprefix(REGISTRY_PREFIX):
            try:
                records[key] = json.loads(store.read_bytes(key))
            except (ValueError, LookupError) as error:
                records[key] = error
    return parse_registry(records)


@dataclass(frozen=True)
class WriterCheck:
    """The outcome for one submit file: ``refusal`` is None when it may run."""

    writer: str | None
    groups: frozenset[str]  # the groups the writer is a registered identity of (empty: none)
    refusal: str | None
    note: str  # one line for the certificate


def check_writer(writer: str | None, group: str, registry: Registry) -> WriterCheck:
    """Whether the submit file under ``group``'s prefix was written by an identity allowed there."""
    principal = unique_id(writer)
    if principal is None:
        note = "writer unknown (the event named no identity): accepted"
        return WriterCheck(writer, frozenset(), None, note)
    groups = registry.groups_of.get(principal, frozenset())
    if not groups:
        return WriterCheck(writer, groups, None, f"written by {writer}, not a group identity: accepted")
    if group in groups:
        return WriterCheck(writer, groups, None, f"written by {writer}, the identity of group {group!r}")
    owners = " and ".join(repr(g) for g in sorted(groups))
    refusal = (
        f"the submit file was written by the identity of group {owners}, not {group!r} ({writer}): "
        f"a group may submit only under its own prefix ({group}/submissions/ takes submissions of "
        f"{group!r} only); the IAM policy that let it write here grants too much"
    )
    return WriterCheck(writer, groups, refusal, f"written by {writer}, the identity of group {owners}")

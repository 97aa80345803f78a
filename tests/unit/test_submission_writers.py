"""The submissions' writer check (pure): principalIds, the group registry and the decision."""

from __future__ import annotations

import json

import pytest

from blocks.s3 import ObjectMissing
from flows.submissions.writers import (
    Registry,
    check_writer,
    load_registry,
    parse_registry,
    registry_key,
    registry_record,
    unique_id,
)

A_USER, B_ROLE = "AIDAJ45Q7YFFAREXAMPLE", "AROAIDPPEZS35WEXAMPLE"


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("AWS:AIDAJ45Q7YFFAREXAMPLE", A_USER),  # S3 notification, IAM user
        ("AWS:AROAIDPPEZS35WEXAMPLE:alice@lab.org", B_ROLE),  # S3 notification, assumed role
        ("AIDAJ45Q7YFFAREXAMPLE", A_USER),  # CloudTrail, IAM user
        ("AROAIDPPEZS35WEXAMPLE:session", B_ROLE),  # CloudTrail, assumed role
        ("AWS:yx3ej5yiay9x5sg68dtv", "yx3ej5yiay9x5sg68dtv"),  # moto's user ids are lowercase
        (None, None),
        ("", None),
        ("AWS:", None),
        ("AWS:has spaces", None),
    ],
)
def test_the_unique_id_is_read_from_every_principal_id_form(principal, expected):
    assert unique_id(principal) == expected


def registry(**groups: list[str]) -> Registry:
    return parse_registry(
        {
            registry_key(group): registry_record(group, ids, arn=f"arn:aws:iam::1:user/{group}", source="t")
            for group, ids in groups.items()
        }
    )


def test_another_groups_identity_is_refused_naming_both_groups():
    check = check_writer(f"AWS:{B_ROLE}:bob", "lab-a", registry(**{"lab-a": [A_USER], "lab-b": [B_ROLE]}))
    assert check.refusal is not None
    assert "written by the identity of group 'lab-b', not 'lab-a'" in check.refusal
    assert f"AWS:{B_ROLE}:bob" in check.refusal and check.groups == {"lab-b"}


def test_the_groups_own_identity_is_accepted():
    check = check_writer(f"AWS:{A_USER}", "lab-a", registry(**{"lab-a": [A_USER], "lab-b": [B_ROLE]}))
    assert check.refusal is None and "identity of group 'lab-a'" in check.note


@pytest.mark.parametrize(
    ("writer", "said"),
    [
        ("AWS:AIDAADMINEXAMPLE0001", "not a group identity"),  # an admin, a platform service
        (None, "writer unknown"),  # EventBridge, a run started by hand
        ("", "writer unknown"),
    ],
)
def test_identities_that_are_no_groups_and_unknown_writers_are_accepted(writer, said):
    check = check_writer(writer, "lab-a", registry(**{"lab-a": [A_USER], "lab-b": [B_ROLE]}))
    assert check.refusal is None and said in check.note


def test_an_identity_registered_for_two_groups_may_submit_for_both_only():
    shared = registry(**{"lab-a": [A_USER], "lab-b": [A_USER]})
    assert check_writer(f"AWS:{A_USER}", "lab-b", shared).refusal is None
    refused = check_writer(f"AWS:{A_USER}", "lab-c", shared).refusal
    assert "group 'lab-a' and 'lab-b', not 'lab-c'" in refused


def test_records_that_are_not_group_records_are_ignored_and_named():
    parsed = parse_registry(
        {
            "groups/lab-a.json": registry_record("lab-a", [A_USER], arn="x", source="t"),
            "groups/lab-b.json": {"group": "lab-other", "principal_ids": [B_ROLE]},  # names another group
            "groups/lab-c.json": {"group": "lab-c", "principal_ids": "AIDA"},
            "groups/lab-d.json": ValueError("not JSON"),
        }
    )
    assert parsed.groups_of == {A_USER: frozenset({"lab-a"})}
    assert [p.split(":")[0] for p in parsed.problems] == [
        "groups/lab-b.json",
        "groups/lab-c.json",
        "groups/lab-d.json",
    ]


class _Store:
    """The two reads load_registry makes of an ObjectStore."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def keys(self, prefix: str):
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))

    def read_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectMissing(key)
        return self.objects[key]


def test_load_registry_reads_the_groups_records_only():
    store = _Store(
        {
            "groups/lab-a.json": json.dumps(registry_record("lab-a", [A_USER], arn="x", source="t")).encode(),
            "groups/lab-b.json": b"{ not json",
            "groups/nested/lab-c.json": b"{}",
            "groups/README.txt": b"",
        }
    )
    loaded = load_registry(store)
    assert loaded.groups_of == {A_USER: frozenset({"lab-a"})}
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith("groups/lab-b.json")

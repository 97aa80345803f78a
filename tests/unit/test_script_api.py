"""The seed's HTTP API (interlinked/script_api.py) and the seed's job descriptions, offline: the
request rules (one-element arrays, keys, buckets) and the description as R sends it."""

from __future__ import annotations

import json

import pytest

from flows.script_jobs.spec import JobSpecError, parse_job_spec
from interlinked.script_api import ApiError, _key, handle, unbox


def test_r_one_element_arrays_are_their_element():
    assert unbox(["Test job"]) == "Test job" and unbox([1, 2]) == [1, 2] and unbox("x") == "x"


def test_the_readme_job_as_r_sends_it_is_accepted_with_debug():
    """``toJSON(job)`` without ``auto_unbox`` (the seed README's snippet), plus the seed's ``debug``."""
    spec = parse_job_spec(
        {
            "func": ["myfunc"],
            "arguments": {"a": [1], "b": [2]},
            "name": ["Test job"],
            "script": ["test.r"],
            "debug": [True],
        }
    )
    assert (spec.func, spec.name, spec.script, spec.language, spec.debug) == (
        "myfunc",
        "Test job",
        "test.r",
        "r",
        True,
    )
    assert spec.arguments == {"a": [1], "b": [2]}  # R reads [1] back as 1
    with pytest.raises(JobSpecError, match="name"):
        parse_job_spec({"func": "f", "name": ["a", "b"], "script": "t.r"})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"key": "test/my_results_1"}, "test/my_results_1"),
        ({"key": ["x.json"], "subdir": "jobs"}, "jobs/x.json"),
        ({"key": "a b.json", "subdir": "results/"}, "results/a b.json"),
    ],
)
def test_keys_are_joined_like_the_seeds_format_dir(payload, expected):
    assert _key(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [{"key": "../secret"}, {"key": "a//b"}, {"key": "/abs"}, {"key": "x", "subdir": ".."}, {"key": ""}, {}],
)
def test_unsafe_or_missing_keys_are_refused(payload):
    with pytest.raises(ApiError):
        _key(payload)


def test_requests_that_cannot_be_served_say_why_without_touching_aws():
    assert handle("/nope", b"{}", "script-job/local")[0] == 404
    status, reply = handle("/upload", b"not json", "script-job/local")
    assert status == 400 and "not JSON" in reply["error"]
    status, reply = handle("/fetch", json.dumps([1]).encode(), "script-job/local")
    assert status == 400 and "JSON object" in reply["error"]

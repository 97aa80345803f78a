"""`interlinked tasks ...` as a user runs it: the real console script against the test moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.collections.model import TaskSpec

INTERLINKED = str(Path(sys.executable).with_name("interlinked"))


@pytest.fixture(params=["dynamodb", "postgres"])
def cli(request, moto_endpoint):
    """Runs `interlinked tasks` on a fresh store of each backend; ``cli.store`` is that store."""
    store = request.getfixturevalue(f"{request.param}_store")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "INTERLINKED_TASKS_BACKEND": request.param,
        # No Prefect server here: the credentials block lookup fails fast and boto3's own
        # configuration (the variables above) applies; Postgres is named by its variable.
        "PREFECT_CLIENT_MAX_RETRIES": "0",
    }
    if request.param == "dynamodb":
        env["INTERLINKED_TASKS_TABLE"] = store.table
    else:
        env["INTERLINKED_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
        env["INTERLINKED_TASKS_SCHEMA"] = store.schema

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [INTERLINKED, "tasks", *args], input=input, capture_output=True, text=True, env=env, timeout=300
        )

    run.store = store
    return run


def test_add_from_tsv_and_template_then_status(cli, tmp_path):
    tsv = tmp_path / "align.tsv"
    tsv.write_text("S1\techo align S1\nS2\techo align S2\nS2\techo align S2\n")
    added = cli("add", "align", "--file", str(tsv), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) | {"duplicate_ids": []} == {
        "collection": "align",
        "added": 2,
        "duplicates": 1,
        "duplicate_ids": [],
    }
    ids = tmp_path / "ids.txt"
    ids.write_text("S1\nS2\nS3\n")
    added = cli("add", "call", "--ids", str(ids), "--command", "call {id} > {id}.vcf")
    assert added.returncode == 0, added.stderr
    assert "added 3 task(s) to call; 0 duplicate(s) skipped" in added.stdout
    assert cli.store.get("call", "S3").command == "call S3 > S3.vcf"

    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    collections = json.loads(status.stdout)["collections"]
    assert {name: (c["todo"], c["total"]) for name, c in collections.items()} == {
        "align": (2, 2),
        "call": (3, 3),
    }
    assert set(collections["align"]) >= {"todo", "locked", "done", "failed", "blocked", "total"}
    text = cli("status", "align")
    assert text.returncode == 0 and text.stdout.splitlines()[1].split()[:7] == [
        "align",
        "2",
        "0",
        "0",
        "0",
        "0",
        "2",
    ]


def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"id": "S1", "command": "true"}\n{"id": "S2", "command": ""}\n{"id": "S3"\n')
    result = cli("add", "align", "--file", str(bad))
    assert result.returncode == 2
    assert "line 2: task 'S2'" in result.stderr and "line 3: not valid JSON" in result.stderr
    assert cli.store.collections() == []

    conflicting = tmp_path / "dup.tsv"
    conflicting.write_text("S1\techo a\nS1\techo b\n")
    result = cli("add", "align", "--file", str(conflicting))
    assert result.returncode == 2 and "repeats line 1 with different content" in result.stderr

    result = cli("add", "align", "--ids", str(conflicting))
    assert result.returncode == 2 and "--ids needs --command" in result.stderr

    for args in (("status", "nope"), ("reset", "nope", "--state", "failed"), ("delete", "nope")):
        result = cli(*args)
        assert result.returncode == 2, args
        assert "no collection named 'nope'" in result.stderr
    assert cli.store.collections() == []


def test_reset_retry_failed_and_delete(cli):
    store = cli.store
    store.add("step", [TaskSpec(f"t{i}", "true") for i in range(3)])
    a, b, _ = store.claim("step", owner="w", batch=3, lease_seconds=600)
    store.fail("step", a.id, a.lease_token, error="boom")
    store.fail("step", b.id, b.lease_token, error="boom")

    result = cli("reset", "step", "--state", "locked", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"collection": "step", "state": "locked", "reset": 1}
    result = cli("retry-failed", "step", a.id)
    assert result.returncode == 0 and "1 failed task(s) of step back to todo" in result.stdout
    assert store.get("step", b.id).state == "failed"
    result = cli("status", "step")
    assert f"failed step/{b.id}: boom" in result.stdout

    # PyAnamo's reset of one item: a done one, a failed one; a running one is refused.
    [c] = store.claim("step", owner="w", batch=1, lease_seconds=600)
    result = cli("reset", "step", c.id)
    assert result.returncode == 2 and "is running" in result.stderr
    store.complete("step", c.id, c.lease_token)
    result = cli("reset", "step", c.id, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"collection": "step", "task": c.id, "state": "todo", "was": "done"}
    result = cli("reset", "step", b.id)
    assert result.returncode == 0 and f"step/{b.id}: back to todo (was failed)" in result.stdout
    again = store.get("step", b.id)
    assert (again.state, again.error, again.attempts) == ("todo", None, 0)
    counts = store.status("step")["step"].as_dict()
    assert (counts["todo"], counts["done"], counts["failed"]) == (3, 0, 0)
    result = cli("delete", "step", "--json")
    assert json.loads(result.stdout) == {"collection": "step", "deleted": 3}
    assert store.collections() == []


def test_status_has_throughput_eta_and_samples(cli):
    store = cli.store
    store.add("align", [TaskSpec(f"a{i}", "true", attributes={"sample": f"S{i}"}) for i in range(4)])
    store.add(
        "call",
        [
            TaskSpec(f"c{i}", "true", depends_on=(f"align/a{i}",), attributes={"sample": f"S{i}"})
            for i in range(4)
        ],
    )
    claimed = {task.id: task for task in store.claim("align", owner="w", batch=4, lease_seconds=60)}
    store.complete("align", "a0", claimed["a0"].lease_token)
    store.fail("align", "a1", claimed["a1"].lease_token, error="exit code 3", exit_code=3)

    status = cli("status", "align", "--json")
    assert status.returncode == 0, status.stderr
    align = json.loads(status.stdout)["collections"]["align"]
    assert {"throughput", "eta_seconds"} <= set(align)
    # Both backends know their rate (per-minute finish counts).
    assert align["throughput"] > 0 and align["eta_seconds"] is not None
    text = cli("status")
    assert text.returncode == 0, text.stderr
    assert "rate" in text.stdout.splitlines()[0] and "eta" in text.stdout.splitlines()[0]

    samples = cli("status", "--samples", "--json")
    assert samples.returncode == 0, samples.stderr
    document = json.loads(samples.stdout)
    assert document["steps"] == ["align", "call"]
    assert document["samples"]["S0"] == {"align": "done", "call": "todo"}
    assert document["samples"]["S1"] == {"align": "failed", "call": "blocked"}
    table = cli("status", "--samples")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["sample", "align", "call"]
    assert table.stdout.splitlines()[2].split() == ["S1", "failed", "blocked"]


def test_drain_refuses_bad_input_before_starting_anything(cli):
    cli.store.add("align", [TaskSpec("a", "true")])
    for args, message in [
        (("nosuch",), "no collection named 'nosuch'"),
        (("align", "--workers", "0"), "--workers must be at least 1"),
        (("align", "--concurrency", "0"), "--concurrency must be at least 1"),
        (("align", "--time-budget", "-5"), "--time-budget must be positive"),
        (("bad/name",), "invalid collection name"),
    ]:
        result = cli("drain", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr


def test_nested_status_buckets_and_nest_resets(cli):
    store = cli.store

    def item(task_id: str, states: list[str]) -> TaskSpec:
        nests = [{"id": f"Task_{k}", "command": "true", "state": state} for k, state in enumerate(states)]
        return TaskSpec(task_id, "true", attributes={"nested": nests})

    store.add(
        "nest",
        [
            item("fresh", ["todo"] * 4),
            item("quarter", ["done", "todo", "todo", "todo"]),
            item("half", ["done", "done", "failed", "todo"]),
            item("most", ["done", "done", "done", "failed", "done"]),  # 80 %
            TaskSpec("plain", "true"),
        ],
    )
    result = cli("status", "nest", "--nested", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["items"] == 4
    assert document["buckets"] == {"todo": 1, "1-25%": 1, "26-75%": 1, "76-99%": 1, "done": 0}
    assert document["nests"] == {"todo": 8, "done": 7, "failed": 2}
    text = cli("status", "nest", "--nested").stdout
    assert "4 nested item(s)" in text and "76-99%" in text

    result = cli("reset", "nest", "most", "--nest", "Task_3", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "collection": "nest",
        "task": "most",
        "state": "todo",
        "nests_reset": ["Task_3"],
    }
    assert [s["state"] for s in store.get("nest", "most").attributes["nested"]] == [
        "done",
        "done",
        "done",
        "todo",
        "done",
    ]
    result = cli("reset", "nest", "half", "--all-nests")
    assert result.returncode == 0 and "Task_0, Task_1, Task_2, Task_3 back to todo" in result.stdout
    assert {s["state"] for s in store.get("nest", "half").attributes["nested"]} == {"todo"}

    for args, message in (
        (("reset", "nest", "plain", "--all-nests"), "not a nested task"),
        (("reset", "nest", "most", "--nest", "Task_9"), "no nested task Task_9"),
        (("reset", "nest", "most", "--state", "failed"), "without --state"),
        (("reset", "nest", "nope", "--all-nests"), "no task 'nope'"),
        (("reset", "nest", "nope"), "no task 'nope'"),
        (("status", "--nested"), "--nested needs a COLLECTION"),
    ):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_by_instance_and_orphans_from_the_cli(cli):
    import socket
    import subprocess as sp

    store = cli.store
    store.add("held", [TaskSpec(f"t{i}", "true") for i in range(3)])
    gone = sp.Popen(["true"])
    gone.wait()
    owner = f"{socket.gethostname()}:{gone.pid}:0badf00d"
    store.claim("held", owner=owner, batch=2, lease_seconds=600)

    result = cli("status", "held", "--by-instance")
    assert result.returncode == 0, result.stderr
    assert f"{owner}  2 task(s) (held: 2)" in result.stdout
    result = cli("status", "--orphans", "--release", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["orphans"]) == 2 and document["released"] == 2
    assert store.status("held")["held"].todo == 3
    result = cli("status", "held", "--release")
    assert result.returncode == 2 and "--release goes with --orphans" in result.stderr

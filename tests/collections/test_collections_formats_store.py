"""PyAnamo and PiCaS inputs through a real store (PostgreSQL, and DynamoDB on the moto server):
added with their states, read back by ``tasks export`` unchanged; and the same through the console
script (``tasks add --format ...``, ``tasks export``), bad input refused with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.collections.client import add_tasks, retry_failed
from flows.collections.formats import export_collection, parse_picas, parse_pyanamo
from flows.collections.model import DONE, TODO, TaskSpec, UnknownCollection
from flows.collections.parsing import parse_tasks

INTERLINKED = str(Path(sys.executable).with_name("interlinked"))

TOKENS = [
    {  # the seed's token
        "_id": "SuperAwesome_Token_117_Testing",
        "lock": 0,
        "done": 0,
        "type": "Testing",
        "files": "doggie",
        "Task_ID": "SuperAwesome_Token_117_Testing",
        "Task_Script": "sleep 5s",
    },
    {
        "_id": "token_1",
        "_rev": "3-b6a1d4b0e0f0a52c1ba3c6e1d9f0aa11",
        "type": "Testing",
        "lock": 1733140000,
        "done": 1733143600,
        "hostname": "wn-12.grid",
        "scrub_count": 0,
        "exit_code": 0,
        "input": {"sample": "HG00097", "reads": ["s3://reads/HG00097_1.fq.gz", "s3://reads/HG00097_2.fq.gz"]},
        "output": {"bam": "s3://results/HG00097.bam", "mapped": 0.9871},
        "uploads": {},
        "error": [],
        "Task_Script": "bash align.sh HG00097",
    },
    {
        "_id": "token_2",
        "type": "Testing",
        "lock": -1,
        "done": -1,
        "hostname": "wn-03.grid",
        "scrub_count": 1,
        "input": {"sample": "HG00098"},
        "output": {},
        "uploads": {},
        "error": [
            {"time": 1733100000, "message": "node lost"},
            {"time": 1733140000, "message": "disk full", "exception": "Traceback ...\nOSError: disk full\n"},
        ],
        "Task_Script": "bash align.sh HG00098",
    },
    {
        "_id": "token_3",
        "type": "Testing",
        "lock": 1733140000,
        "done": 1733140100,
        "exit_code": "2",
        "hostname": "wn-05.grid",
        "scrub_count": 0,
        "input": {"sample": "HG00099"},
        "error": [],
        "Task_Script": "bash align.sh HG00099",
    },
    {
        "_id": "token_4",
        "type": "Testing",
        "lock": 1733140000,
        "done": 0,
        "hostname": "wn-07.grid",
        "scrub_count": 0,
        "input": {"sample": "HG00100"},
        "error": [],
        "Task_Script": "bash align.sh HG00100",
    },
]
COUCHDB_EXPORT = {
    "total_rows": len(TOKENS) + 1,
    "offset": 0,
    "rows": [
        {
            "id": "_design/Monitor",
            "key": "_design/Monitor",
            "value": {"rev": "1-a"},
            "doc": {"_id": "_design/Monitor"},
        },
        *(
            {"id": t["_id"], "key": t["_id"], "value": {"rev": t.get("_rev", "1-x")}, "doc": t}
            for t in TOKENS
        ),
    ],
}
NESTED = "HG00096|Step_B|seq|3,4,5\nHG00097|Step_B|seq|2\n"
SINGLE = "1|HG00096|Step_A|bash align.sh|HG00096\n2|HG00097|Step_A|bash align.sh|HG00097\n"


def test_tokens_are_added_with_their_states_and_exported_unchanged(store):
    tasks = parse_picas(json.dumps(COUCHDB_EXPORT), "Testing")
    result = add_tasks(store, "Testing", tasks)
    assert (result.added, result.duplicates) == (5, 0)

    status = store.status("Testing")["Testing"]
    assert (status.todo, status.locked, status.done, status.failed) == (2, 0, 1, 2)
    assert {failure["id"]: failure["error"] for failure in status.failures} == {
        "token_2": "disk full",
        "token_3": "exit code 2",
    }
    assert store.get("Testing", "token_1").state == DONE
    assert store.get("Testing", "token_3").exit_code == 2

    exported = [json.loads(line) for line in export_collection(store, "Testing", "picas").splitlines()]
    assert sorted(exported, key=lambda d: d["_id"]) == sorted(TOKENS, key=lambda d: d["_id"])

    # Only the todo tokens are claimable: a done or failed import never runs again by itself.
    claimed = store.claim("Testing", owner="test", batch=10)
    assert sorted(task.id for task in claimed) == ["SuperAwesome_Token_117_Testing", "token_4"]

    # Adding the same export again: every token is a duplicate, nothing changes.
    assert add_tasks(store, "Testing", parse_picas(json.dumps(COUCHDB_EXPORT), "Testing")).duplicates == 5


def test_retried_tokens_export_as_todo_with_their_history(store):
    add_tasks(store, "Testing", parse_picas("\n".join(json.dumps(t) for t in TOKENS), "Testing"))
    assert retry_failed(store, "Testing", ["token_2"]) == 1
    exported = {
        d["_id"]: d for d in map(json.loads, export_collection(store, "Testing", "picas").splitlines())
    }
    assert (exported["token_2"]["lock"], exported["token_2"]["done"]) == (0, 0)
    assert exported["token_2"]["error"] == TOKENS[2]["error"]  # PiCaS's scrub keeps the history too
    assert exported["token_2"]["scrub_count"] == 2  # ... and counts (it came scrubbed once)
    assert exported["token_3"] == TOKENS[3]


def test_pyanamo_items_round_trip_through_the_store(store):
    add_tasks(store, "Step_A", parse_pyanamo(SINGLE, "Step_A"))
    add_tasks(store, "Step_B", parse_pyanamo(NESTED, "Step_B", nested_delimiter=","))
    assert export_collection(store, "Step_A", "pyanamo") == SINGLE
    assert export_collection(store, "Step_B", "pyanamo") == NESTED
    item = store.get("Step_B", "HG00096")
    assert [sub["command"] for sub in item.attributes["nested"]] == ["seq 3", "seq 4", "seq 5"]
    run = subprocess.run(["bash", "-c", item.command], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and len(run.stdout.split()) == 3 + 4 + 5


def test_jsonl_export_carries_states_and_dependencies_to_another_collection(store):
    add_tasks(store, "Testing", parse_picas("\n".join(json.dumps(t) for t in TOKENS), "Testing"))
    add_tasks(
        store,
        "Calls",
        parse_tasks(
            '{"id": "HG00097", "command": "call HG00097", "depends_on": ["Testing/token_1"]}\n', "Calls"
        ),
    )
    # The dependency on an imported done token is satisfied: the call is claimable at once.
    assert [task.id for task in store.claim("Calls", owner="test")] == ["HG00097"]
    exported = export_collection(store, "Testing", "jsonl")
    copy = parse_tasks(exported, "Copy", fmt="jsonl")
    add_tasks(store, "Copy", copy)
    status = store.status("Copy")["Copy"]
    assert (status.todo, status.done, status.failed) == (2, 1, 2)
    assert export_collection(store, "Copy", "jsonl") == exported


def test_export_of_an_unknown_collection_is_refused(store):
    with pytest.raises(UnknownCollection):
        export_collection(store, "nope", "jsonl")
    store.add("Other", [TaskSpec(id="a", command="true", state=TODO)])
    with pytest.raises(UnknownCollection):
        export_collection(store, "nope", "picas")


@pytest.fixture
def cli(postgres_store, postgres_dsn):
    """``interlinked tasks`` (the console script) on a fresh PostgreSQL store."""
    env = {
        **os.environ,
        "INTERLINKED_TASKS_BACKEND": "postgres",
        "INTERLINKED_DATABASE_URL": postgres_dsn,
        "INTERLINKED_TASKS_SCHEMA": postgres_store.schema,
        "PREFECT_CLIENT_MAX_RETRIES": "0",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [INTERLINKED, "tasks", *args], capture_output=True, text=True, env=env, timeout=300
        )

    run.store = postgres_store
    return run


def test_cli_add_and_export_in_their_formats(cli, tmp_path):
    tokens = tmp_path / "all_docs.json"
    tokens.write_text(json.dumps(COUCHDB_EXPORT, indent=2))
    added = cli("add", "Testing", "--format", "picas", "--file", str(tokens), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) | {"duplicate_ids": []} == {
        "collection": "Testing",
        "added": 5,
        "duplicates": 0,
        "duplicate_ids": [],
        "skipped": 1,
    }
    out = tmp_path / "tokens.jsonl"
    exported = cli("export", "Testing", "--format", "picas", "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(documents, key=lambda d: d["_id"]) == sorted(TOKENS, key=lambda d: d["_id"])

    nested = tmp_path / "nested.txt"
    nested.write_text(NESTED.replace("|", ";").replace(",", ":"))
    added = cli(
        "add",
        "Step_B",
        "--format",
        "pyanamo",
        "--file",
        str(nested),
        "--separator",
        ";",
        "--nested-delimiter",
        ":",
    )
    assert added.returncode == 0, added.stderr
    assert "added 2 task(s) to Step_B" in added.stdout
    exported = cli("export", "Step_B", "--format", "pyanamo", "--separator", ";")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == NESTED.replace("|", ";").replace(",", ":")


def test_cli_bad_input_exits_2_naming_the_line_and_adds_nothing(cli, tmp_path):
    items = tmp_path / "items.txt"
    items.write_text(
        "1|HG00096|Step_A|bash align.sh|HG00096\nx2|HG00097|Step_A|bash align.sh|HG00097\n3|HG00098|Step_A\n"
    )
    result = cli("add", "Step_A", "--format", "pyanamo", "--file", str(items))
    assert result.returncode == 2
    assert f"{items} line 2: itemID 'x2' is not an integer" in result.stderr
    assert f"{items} line 3: expected 5 fields" in result.stderr

    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(
        json.dumps(TOKENS[0]) + "\n" + json.dumps({"_id": "token_9", "lock": 0, "done": 0}) + "\n"
    )
    result = cli("add", "Testing", "--format", "picas", "--file", str(tokens))
    assert result.returncode == 2
    assert f"{tokens} line 2: token 'token_9' has no Task_Script" in result.stderr

    tokens.write_text(json.dumps(TOKENS[0]) + "\n{not json}\n")
    result = cli("add", "Testing", "--format", "picas", "--file", str(tokens))
    assert result.returncode == 2 and f"{tokens} line 2: not valid JSON" in result.stderr
    assert cli.store.collections() == []

    result = cli("export", "Testing", "--format", "jsonl", "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2 and "no collection named 'Testing'" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_deletes_nests_of_an_item(cli, tmp_path):
    nested = tmp_path / "nested.txt"
    nested.write_text(NESTED)
    added = cli("add", "Step_B", "--format", "pyanamo", "--file", str(nested), "--nested-delimiter", ",")
    assert added.returncode == 0, added.stderr
    deleted = cli("delete", "Step_B", "HG00096", "--nest", "Task_1", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {
        "collection": "Step_B",
        "task": "HG00096",
        "state": "todo",
        "nests_deleted": ["Task_1"],
        "nests_left": ["Task_0", "Task_2"],
    }
    exported = cli("export", "Step_B", "--format", "pyanamo")
    assert exported.stdout == "HG00096|Step_B|seq|3,5\nHG00097|Step_B|seq|2\n"

    for args, message in (
        (("HG00096", "--nest", "Task_7"), "has no nested task Task_7"),
        (("HG00097", "--nest", "Task_0"), "nothing to run"),
        (("--nest", "Task_0"), "delete nested tasks as"),
        (("HG00096",), "delete nested tasks as"),
    ):
        result = cli("delete", "Step_B", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert cli.store.status("Step_B")["Step_B"].todo == 2


def test_cli_drain_of_several_collections_checks_each_before_starting_anything(cli, tmp_path):
    # `tasks drain high low` (PiCaS's prioritized views): every collection must exist, once.
    items = tmp_path / "items.txt"
    items.write_text(SINGLE)
    assert cli("add", "high", "--format", "pyanamo", "--file", str(items)).returncode == 0
    result = cli("drain", "high", "low")
    assert result.returncode == 2 and "no collection named 'low'" in result.stderr
    result = cli("drain", "high", "high")
    assert result.returncode == 2 and "named twice" in result.stderr

"""PyAnamo lines and PiCaS tokens in and out (flows.collections.formats), without a store.

The inputs are shaped as the tools write them: PyAnamo's ``import-items-generic.py`` lines
(``itemID|taskID|table|script|argument``, nested ``taskID|table|script|a,b,c``), picasclient
``Task`` documents (``lock``/``done`` times, ``error`` entries ``{"time", "message"[, "exception"]}``,
``scrub_count``, ``exit_code``), a CouchDB ``_all_docs?include_docs=true`` export and the seed's own
token example.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from flows.collections.formats import (
    export_text,
    nested_command,
    parse_picas,
    parse_pyanamo,
    picas_outcome,
    read_input,
)
from flows.collections.model import DONE, FAILED, LOCKED, TODO, Task, TaskInputError, TaskSpec
from flows.collections.parsing import parse_tasks

SINGLE = """\
1|Seq_Test_1|Testing|seq|10
2|Seq_Test_2|Testing|seq|12
3|Seq_Test_3|Testing|bash /opt/pipeline/align.sh|HG00096 s3://reads/HG00096.cram
10|Seq_Test_10|Testing|seq|4
"""

NESTED = """\
Seq_Test_7|Testing|seq|3
Seq_Test_8|Testing|seq|8,7
Seq_Test_9|Testing|seq|15,16,17,3
"""

# The seed's token (002: "Create tokens"), as its loop saves it.
SEED_TOKEN = {
    "_id": "SuperAwesome_Token_117_Testing",
    "lock": 0,
    "done": 0,
    "type": "Testing",
    "files": "doggie",
    "Task_ID": "SuperAwesome_Token_117_Testing",
    "Task_Script": "sleep 5s",
}

# picasclient Task documents in each state, as CouchDB holds them.
TODO_TOKEN = {
    "_id": "token_0",
    "_rev": "1-9c65296036141e575d32ba9c034dd3ee",
    "type": "Testing",
    "lock": 0,
    "done": 0,
    "hostname": "",
    "scrub_count": 0,
    "input": {"sample": "HG00096"},
    "output": {},
    "uploads": {},
    "error": [],
    "Task_Script": "bash align.sh HG00096",
}
DONE_TOKEN = {
    **TODO_TOKEN,
    "_id": "token_1",
    "_rev": "3-b6a1d4b0e0f0a52c1ba3c6e1d9f0aa11",
    "lock": 1733140000,
    "done": 1733143600,
    "hostname": "wn-12.grid",
    "exit_code": 0,
    "output": {"bam": "s3://results/HG00097.bam"},
    "input": {"sample": "HG00097"},
    "_attachments": {
        "logs_token_1.out": {
            "content_type": "text/plain",
            "revpos": 3,
            "digest": "md5-1B2M2Y8AsgTpgAmY7PhCfg==",
            "length": 0,
            "stub": True,
        }
    },
    "Task_Script": "bash align.sh HG00097",
}
ERROR_TOKEN = {
    **TODO_TOKEN,
    "_id": "token_2",
    "lock": -1,
    "done": -1,
    "hostname": "wn-03.grid",
    "scrub_count": 1,
    "error": [
        {"time": 1733100000, "message": "node lost"},
        {
            "time": 1733140000,
            "message": "Exception <class 'OSError'> occurred during processing: disk full",
            "exception": "Traceback (most recent call last):\n  ...\nOSError: disk full\n",
        },
    ],
    "input": {"sample": "HG00098"},
    "Task_Script": "bash align.sh HG00098",
}
EXIT_TOKEN = {  # picasclient's examples: done, but in the *error* view by its exit code
    **TODO_TOKEN,
    "_id": "token_3",
    "lock": 1733140000,
    "done": 1733140100,
    "exit_code": "2",
    "input": {"sample": "HG00099"},
    "Task_Script": "bash align.sh HG00099",
}
LOCKED_TOKEN = {**TODO_TOKEN, "_id": "token_4", "lock": 1733140000, "hostname": "wn-07.grid"}
SCRUBBED_TOKEN = {  # failed once, scrubbed back into the todo view (the error history stays)
    **TODO_TOKEN,
    "_id": "token_5",
    "scrub_count": 2,
    "error": [{"time": 1733100000, "message": "node lost"}],
}
TOKENS = [TODO_TOKEN, DONE_TOKEN, ERROR_TOKEN, EXIT_TOKEN, LOCKED_TOKEN, SCRUBBED_TOKEN]


def stored(specs, collection="Testing") -> list[Task]:
    """The tasks a store holds right after adding ``specs`` (what export reads back)."""
    return [
        Task(
            collection=collection,
            id=spec.id,
            command=spec.command,
            depends_on=spec.depends_on,
            attributes=json.loads(json.dumps(spec.attributes)),
            state=spec.state,
            error=spec.error,
            exit_code=spec.exit_code,
            created_at=1.0,
            updated_at=1.0,
        )
        for spec in specs
    ]


def by_id(specs) -> dict[str, TaskSpec]:
    return {spec.id: spec for spec in specs}


# -- PyAnamo ---------------------------------------------------------------------------------------


def test_pyanamo_single_items_keep_their_ids_and_fields():
    tasks = by_id(parse_pyanamo(SINGLE, "Testing"))
    assert list(tasks) == ["1", "2", "3", "10"]
    assert tasks["1"].command == "seq 10"
    assert tasks["3"].command == "bash /opt/pipeline/align.sh HG00096 s3://reads/HG00096.cram"
    assert tasks["3"].attributes == {
        "pyanamo": {
            "itemID": 3,
            "taskID": "Seq_Test_3",
            "table": "Testing",
            "script": "bash /opt/pipeline/align.sh",
            "argument": "HG00096 s3://reads/HG00096.cram",
        }
    }
    assert all(spec.state == TODO for spec in tasks.values())


def test_pyanamo_nested_items_hold_one_sub_task_per_argument():
    tasks = by_id(parse_pyanamo(NESTED, "Testing", nested_delimiter=","))
    assert list(tasks) == ["Seq_Test_7", "Seq_Test_8", "Seq_Test_9"]
    item = tasks["Seq_Test_9"]
    assert item.attributes["nested"] == [
        {"id": "Task_0", "command": "seq 15", "state": "todo"},
        {"id": "Task_1", "command": "seq 16", "state": "todo"},
        {"id": "Task_2", "command": "seq 17", "state": "todo"},
        {"id": "Task_3", "command": "seq 3", "state": "todo"},
    ]
    assert item.attributes["pyanamo"]["arguments"] == ["15", "16", "17", "3"]
    # Run as-is by a drain that knows nothing of nesting: every sub-task runs, exit 0.
    run = subprocess.run(["bash", "-c", item.command], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    assert sorted(run.stdout.split()) == sorted(
        str(n) for count in (15, 16, 17, 3) for n in range(1, count + 1)
    )


def test_a_nested_command_fails_naming_the_failed_sub_tasks_after_all_ran(tmp_path):
    marker = tmp_path / "late"
    command = nested_command(
        [
            {"id": "Task_0", "command": "exit 3"},
            {"id": "Task_1", "command": f"sleep 0.3; touch {marker} # a comment; ) cannot escape"},
            {"id": "Task_2", "command": "true"},
            {"id": "Task_3", "command": "false"},
        ]
    )
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "nested task Task_0 failed" in run.stderr
    assert "nested task Task_3 failed" in run.stderr
    assert "Task_1" not in run.stderr and "Task_2" not in run.stderr
    assert marker.exists()  # the slow sibling was waited for, not abandoned


def test_pyanamo_separator_and_nested_delimiter_are_the_users():
    text = "HG00096\tStep_B\tgatk HaplotypeCaller -I HG00096.bam -L\tchr1;chr2;chrX\n"
    (item,) = parse_pyanamo(text, "Step_B", separator="\t", nested_delimiter=";")
    assert [sub["command"] for sub in item.attributes["nested"]] == [
        "gatk HaplotypeCaller -I HG00096.bam -L chr1",
        "gatk HaplotypeCaller -I HG00096.bam -L chr2",
        "gatk HaplotypeCaller -I HG00096.bam -L chrX",
    ]
    (single,) = parse_pyanamo("7;HG1;Step_A;echo|cat;x\n", "Step_A", separator=";")
    assert single.command == "echo|cat x"  # a shell pipe is fine once | is not the separator


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        (
            "1|a|T|seq|3\n2|b|T|seq\n",
            {},
            ["line 2: expected 5 fields", "nested line? those need --nested-delimiter"],
        ),
        ("1|a|T|seq|3\n\nx1|b|T|seq|4\n", {}, ["line 3: itemID 'x1' is not an integer"]),
        ("1|a|T|echo a | grep a|3\n", {}, ["line 1: expected 5 fields", "got 6", "--separator"]),
        ("1|a|T||\n", {}, ["line 1: item 1: empty script"]),
        ("a|T|seq|1,2\nb|T|seq\n", {"nested_delimiter": ","}, ["line 2: expected 4 fields"]),
        ("1|a|T|seq|1,2\n", {"nested_delimiter": ","}, ["line 1: expected 4 fields", "single-item line?"]),
        ("bad id|T|seq|1,2\n", {"nested_delimiter": ","}, ["line 1: taskID 'bad id' cannot be a task id"]),
        ("1|a|T|seq|3\n1|a|T|seq|4\n", {}, ["line 2: task id '1' repeats line 1 with different content"]),
    ],
)
def test_bad_pyanamo_lines_are_named_and_nothing_is_returned(text, options, expected):
    with pytest.raises(TaskInputError) as caught:
        parse_pyanamo(text, "Testing", source="items.txt", **options)
    message = str(caught.value)
    assert message.startswith("nothing was added")
    for part in expected:
        assert part in message


def test_pyanamo_round_trip_gives_the_same_lines():
    assert export_text(stored(parse_pyanamo(SINGLE, "Testing")), "Testing", "pyanamo") == SINGLE
    nested = stored(parse_pyanamo(NESTED, "Testing", nested_delimiter=","))
    assert export_text(nested, "Testing", "pyanamo") == NESTED
    tabbed = NESTED.replace("|", "\t").replace(",", ";")
    again = stored(parse_pyanamo(tabbed, "Testing", separator="\t", nested_delimiter=";"))
    assert export_text(again, "Testing", "pyanamo", separator="\t") == tabbed


def test_pyanamo_export_of_other_tasks_and_what_it_cannot_hold():
    jsonl = '{"id": "HG00096", "command": "bash call.sh HG00096"}\n{"id": "5", "command": "seq 5"}\n'
    lines = export_text(stored(parse_tasks(jsonl, "Step_A")), "Step_A", "pyanamo").splitlines()
    assert lines == ["5|5|Step_A|seq 5|", "6|HG00096|Step_A|bash call.sh HG00096|"]
    assert by_id(parse_pyanamo("\n".join(lines), "Step_A"))["6"].command == "bash call.sh HG00096"

    piped = stored(parse_tasks('{"id": "a", "command": "zcat x.gz | wc -l"}\n', "Step_A"))
    with pytest.raises(TaskInputError, match="contains the separator '\\|'"):
        export_text(piped, "Step_A", "pyanamo")
    assert export_text(piped, "Step_A", "pyanamo", separator="\t") == "1\ta\tStep_A\tzcat x.gz | wc -l\t\n"

    mixed = stored(parse_pyanamo(SINGLE, "T")) + stored(parse_pyanamo(NESTED, "T", nested_delimiter=","))
    with pytest.raises(TaskInputError, match="4 single and 3 nested"):
        export_text(mixed, "T", "pyanamo")


# -- PiCaS -----------------------------------------------------------------------------------------


def test_the_seeds_token_becomes_a_task():
    (task,) = parse_picas(json.dumps(SEED_TOKEN), "Testing")
    assert task.id == "SuperAwesome_Token_117_Testing"
    assert task.command == "sleep 5s"
    assert task.state == TODO
    assert task.attributes == {
        "files": "doggie",
        "Task_ID": "SuperAwesome_Token_117_Testing",
        "picas": {"lock": 0, "done": 0, "type": "Testing"},
    }


def test_token_states_map_as_picas_views_see_them():
    tasks = by_id(parse_picas("\n".join(json.dumps(token) for token in TOKENS), "Testing"))
    assert {task_id: task.state for task_id, task in tasks.items()} == {
        "token_0": TODO,
        "token_1": DONE,
        "token_2": FAILED,
        "token_3": FAILED,
        "token_4": TODO,  # a PiCaS lock belongs to a worker of the old database
        "token_5": TODO,  # scrubbed: back in PiCaS's todo view
    }
    assert tasks["token_2"].error == "Exception <class 'OSError'> occurred during processing: disk full"
    assert tasks["token_3"].error == "exit code 2" and tasks["token_3"].exit_code == 2
    assert tasks["token_1"].exit_code == 0
    # Payload fields are attributes; bookkeeping is kept verbatim.
    assert tasks["token_1"].attributes["output"] == {"bam": "s3://results/HG00097.bam"}
    assert tasks["token_1"].attributes["input"] == {"sample": "HG00097"}
    assert tasks["token_2"].attributes["picas"]["error"] == ERROR_TOKEN["error"]
    assert tasks["token_1"].attributes["picas"]["_attachments"] == DONE_TOKEN["_attachments"]
    assert "Task_Script" not in tasks["token_1"].attributes


def test_an_unscrubbed_error_list_is_a_failure():
    token = {**TODO_TOKEN, "error": [{"time": 1, "message": "reference genome missing"}]}
    assert picas_outcome(token) == (FAILED, "reference genome missing", None)


def test_a_couchdb_all_docs_export_skips_design_and_deleted_documents():
    export = {
        "total_rows": 5,
        "offset": 0,
        "rows": [
            {
                "id": "_design/Testing",
                "key": "_design/Testing",
                "value": {"rev": "1-a"},
                "doc": {"_id": "_design/Testing", "_rev": "1-a", "language": "javascript", "views": {}},
            },
            *(
                {
                    "id": token["_id"],
                    "key": token["_id"],
                    "value": {"rev": token.get("_rev", "1-x")},
                    "doc": token,
                }
                for token in TOKENS[:3]
            ),
            {"id": "token_9", "key": "token_9", "value": {"rev": "2-d", "deleted": True}, "doc": None},
        ],
    }
    tasks = parse_picas(json.dumps(export, indent=2), "Testing")
    assert [task.id for task in tasks] == ["token_0", "token_1", "token_2"]
    assert tasks.skipped == 1


def test_a_json_array_and_a_docs_object_are_read_too():
    array = parse_picas(json.dumps(TOKENS, indent=1), "Testing")
    docs = parse_picas(json.dumps({"docs": TOKENS}), "Testing")
    assert [task.id for task in array] == [task.id for task in docs] == [t["_id"] for t in TOKENS]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            json.dumps(TODO_TOKEN) + "\n" + json.dumps({**SEED_TOKEN, "Task_Script": ""}) + "\n",
            ["tokens.json line 2: token 'SuperAwesome_Token_117_Testing' has no Task_Script"],
        ),
        (
            json.dumps(TODO_TOKEN) + "\n" + '{"_id": "token_7", "Task_Script": "true",\n',
            ["tokens.json line 2: not valid JSON"],
        ),
        (
            json.dumps([TODO_TOKEN, {k: v for k, v in SEED_TOKEN.items() if k != "Task_Script"}]),
            ["tokens.json document 2 (_id 'SuperAwesome_Token_117_Testing'): token", "has no Task_Script"],
        ),
        (
            '[\n  {"_id": "token_0",\n   "Task_Script": "true"\n  },\n  {"_id": \n]\n',
            ["tokens.json line 6: not valid JSON (Expecting value"],
        ),
        (
            json.dumps({"rows": [{"id": "token_0", "key": "token_0", "value": {"rev": "1-a"}}]}),
            ["row 1 (id 'token_0')", "include_docs=true"],
        ),
        (  # a CouchDB export: a bad token is named by its row and _id
            json.dumps({"rows": [{"id": "token_0", "doc": TODO_TOKEN}, {"id": "t9", "doc": {"_id": "t9"}}]}),
            ["tokens.json row 2 (_id 't9'): token 't9' has no Task_Script"],
        ),
        (json.dumps({**SEED_TOKEN, "_id": "tokens/with space"}), ["document 1", "cannot be a task id"]),
        (json.dumps({**SEED_TOKEN, "lock": "yes"}), ["'lock' must be a number"]),
        (json.dumps({"Task_Script": "true"}), ["token has no '_id'"]),
        (
            json.dumps(TODO_TOKEN) + "\n" + json.dumps({**SEED_TOKEN, "type": "Other"}) + "\n",
            ["2 types ('Other': 1, 'Testing': 1)", "--type TYPE"],
        ),
    ],
)
def test_bad_tokens_are_named_and_nothing_is_returned(text, expected):
    with pytest.raises(TaskInputError) as caught:
        parse_picas(text, "Testing", source="tokens.json")
    message = str(caught.value)
    assert message.startswith("nothing was added")
    for part in expected:
        assert part in message


def test_type_picks_the_tokens_of_one_collection():
    text = "\n".join(json.dumps(token) for token in [TODO_TOKEN, {**SEED_TOKEN, "type": "Other"}])
    tasks = parse_picas(text, "Other", token_type="Other")
    assert [task.id for task in tasks] == ["SuperAwesome_Token_117_Testing"]
    assert tasks.skipped == 1


def test_picas_round_trip_gives_every_token_back():
    for text in (
        "\n".join(json.dumps(token) for token in [SEED_TOKEN, *TOKENS]),
        json.dumps({"rows": [{"id": t["_id"], "doc": t} for t in [SEED_TOKEN, *TOKENS]]}),
    ):
        seed_and_tokens = [{**SEED_TOKEN, "type": "Testing"}, *TOKENS]
        exported = export_text(stored(parse_picas(text, "Testing")), "Testing", "picas")
        documents = [json.loads(line) for line in exported.splitlines()]
        assert sorted(documents, key=lambda d: d["_id"]) == sorted(seed_and_tokens, key=lambda d: d["_id"])
        # ... and reading the export again gives the same tasks.
        assert by_id(parse_picas(exported, "Testing")) == by_id(parse_picas(text, "Testing"))


def test_a_token_that_moved_on_here_says_so_in_picas_terms():
    todo, error = stored(parse_picas("\n".join(json.dumps(t) for t in (TODO_TOKEN, ERROR_TOKEN)), "Testing"))
    todo.state, todo.exit_code, todo.started_at, todo.finished_at = DONE, 0, 1733150000.5, 1733150100.2
    error.state, error.error, error.exit_code = FAILED, "exit code 137 (killed)", 137
    error.finished_at = 1733160000.0
    locked = stored([TaskSpec(id="plain", command="true")], "Testing")[0]
    locked.state, locked.started_at, locked.lease_owner = LOCKED, 1733170000.0, "ip-10-0-0-7:4242:ab12cd34"
    exported = {
        document["_id"]: document
        for document in map(json.loads, export_text([todo, error, locked], "Testing", "picas").splitlines())
    }
    done_token, error_token, locked_token = exported["token_0"], exported["token_2"], exported["plain"]
    assert (done_token["lock"], done_token["done"], done_token["exit_code"]) == (1733150000, 1733150100, 0)
    assert done_token["_rev"] == TODO_TOKEN["_rev"]
    assert (error_token["lock"], error_token["done"], error_token["exit_code"]) == (-1, -1, 137)
    assert error_token["error"] == [
        *ERROR_TOKEN["error"],
        {"time": 1733160000, "message": "exit code 137 (killed)"},
    ]
    assert locked_token == {
        "_id": "plain",
        "type": "Testing",
        "hostname": "ip-10-0-0-7",
        "scrub_count": 0,
        "error": [],
        "lock": 1733170000,
        "done": 0,
        "Task_Script": "true",
    }
    again = by_id(parse_picas(export_text([todo, error], "Testing", "picas"), "Testing"))
    assert (again["token_0"].state, again["token_2"].state) == (DONE, FAILED)
    assert again["token_2"].error == "exit code 137 (killed)"


# -- JSON Lines, and the options ---------------------------------------------------------------------


def test_jsonl_export_keeps_states_and_reads_back():
    specs = list(parse_picas("\n".join(json.dumps(t) for t in TOKENS), "Testing"))
    specs.append(
        TaskSpec(id="after", command="true", depends_on=("Testing/token_1",), attributes={"sample": "x"})
    )
    exported = export_text(stored(specs), "Testing", "jsonl")
    assert by_id(parse_tasks(exported, "Testing", fmt="jsonl")) == by_id(specs)
    first = json.loads(exported.splitlines()[-1])
    assert first["id"] == "token_5" and first["state"] == "todo"


def test_jsonl_reads_a_locked_task_as_todo_and_refuses_unknown_states():
    (task,) = parse_tasks('{"id": "a", "command": "true", "state": "locked"}\n', "T", fmt="jsonl")
    assert task.state == TODO
    with pytest.raises(TaskInputError, match=r"line 1: .*'state' must be"):
        parse_tasks('{"id": "a", "command": "true", "state": "running"}\n', "T", fmt="jsonl")


def test_export_orders_ids_naturally():
    specs = [TaskSpec(id=f"token_{n}", command="true") for n in (10, 2, 1)]
    exported = export_text(stored(specs), "T", "jsonl")
    assert [json.loads(line)["id"] for line in exported.splitlines()] == ["token_1", "token_2", "token_10"]


def test_options_that_do_not_fit_the_format_are_refused(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a", "command": "true"}\n')
    with pytest.raises(TaskInputError, match="--separator and --nested-delimiter go with --format pyanamo"):
        read_input("T", file=str(path), fmt="jsonl", separator=";")
    with pytest.raises(TaskInputError, match="--type goes with --format picas"):
        read_input("T", file=str(path), fmt="pyanamo", token_type="x")
    with pytest.raises(TaskInputError, match="must be non-empty and differ"):
        read_input("T", file=str(path), fmt="pyanamo", nested_delimiter="|")
    with pytest.raises(TaskInputError, match="go with --format pyanamo"):
        export_text([], "T", "picas", separator=";")
    assert len(read_input("T", file=str(path))) == 1


def test_nest_progress_buckets_and_pyanamos_quartiles():
    from flows.collections.client import nest_bucket, nest_quartile

    cases = [(0, 4), (1, 4), (1, 3), (2, 4), (2, 3), (3, 4), (4, 4), (1, 100), (99, 100), (0, 0)]
    assert [nest_bucket(done, total) for done, total in cases] == [
        "todo", "1-25%", "26-75%", "26-75%", "26-75%", "26-75%", "done", "1-25%", "76-99%", "todo"
    ]  # fmt: skip
    # PyAnamo's summarize_nestedTasks: int(100 * done / total) in 1-25, 26-50, 51-75, 76-99.
    assert [nest_quartile(done, total) for done, total in cases] == [
        "todo", "Q1", "Q2", "Q2", "Q3", "Q3", "done", "Q1", "Q4", "todo"
    ]  # fmt: skip


def test_a_failed_token_requeued_here_exports_as_scrubbed_and_reads_back_as_todo():
    # A token in error that was never scrubbed is failed on import; retried here (PiCaS's scrub),
    # its export must say so (scrub_count + 1), or importing the export would fail it again.
    unscrubbed = {**ERROR_TOKEN, "lock": 0, "done": 0, "scrub_count": 0}
    [task] = stored(parse_picas(json.dumps(unscrubbed), "Testing"))
    assert task.state == FAILED
    task.state, task.error, task.exit_code = TODO, None, None  # retry-failed
    [token] = [json.loads(line) for line in export_text([task], "Testing", "picas").splitlines()]
    assert (token["lock"], token["done"], token["scrub_count"]) == (0, 0, 1)
    assert token["error"] == ERROR_TOKEN["error"]
    [again] = parse_picas(json.dumps(token), "Testing")
    assert again.state == TODO

"""Task input for `interlinked tasks add`: JSON Lines, TSV, ids + template; all or nothing."""

from __future__ import annotations

import pytest

from flows.collections.model import TaskInputError, TaskSpec, dependency_ref
from flows.collections.parsing import detect_format, parse_tasks, tasks_from_ids


def test_json_lines_with_dependencies_and_attributes():
    text = (
        '{"id": "S1", "command": "align S1", "attributes": {"sample": "S1", "reads": "s3://d/S1.fq"}}\n'
        "\n"
        '{"id": "S2", "command": "align S2", "depends_on": ["qc/S2", "S1"]}\n'
    )
    tasks = parse_tasks(text, "align")
    assert tasks == [
        TaskSpec("S1", "align S1", (), {"sample": "S1", "reads": "s3://d/S1.fq"}),
        # a bare id is a task of the same collection
        TaskSpec("S2", "align S2", ("qc/S2", "align/S1")),
    ]
    assert tasks.repeats == 0


def test_tsv_keeps_everything_after_the_first_tab_as_the_command():
    text = "# sample\tcommand\nS1\tbwa mem ref.fa S1.fq\t> S1.sam\nS2\techo 'two'\n"
    assert detect_format(text) == "tsv"
    assert parse_tasks(text, "align") == [
        TaskSpec("S1", "bwa mem ref.fa S1.fq\t> S1.sam"),
        TaskSpec("S2", "echo 'two'"),
    ]


def test_every_bad_line_is_named_by_number():
    text = (
        '{"id": "ok", "command": "true"}\n'
        '{"id": "no-command"}\n'
        "not json\n"
        '{"id": "a/b", "command": "true"}\n'
        '{"id": "x", "command": "true", "extra": 1}\n'
        '{"id": "y", "command": "   "}\n'
    )
    with pytest.raises(TaskInputError) as caught:
        parse_tasks(text, "c", source="tasks.jsonl")
    message = str(caught.value)
    assert message.startswith("nothing was added")
    for number in (2, 3, 4, 5, 6):
        assert f"tasks.jsonl line {number}:" in message
    assert "line 1:" not in message
    assert "unknown field(s) extra" in message


def test_tsv_line_without_tab_or_with_empty_command_is_refused():
    with pytest.raises(TaskInputError, match=r"line 2: expected 'id<TAB>command'"):
        parse_tasks("S1\techo 1\nS2 echo 2\n", "c")
    with pytest.raises(TaskInputError, match=r"line 1: task 'S1': empty command"):
        parse_tasks("S1\t \n", "c")


def test_the_same_id_twice_counts_once_and_conflicting_content_is_an_error():
    tasks = parse_tasks("S1\techo 1\nS1\techo 1\nS2\techo 2\n", "c")
    assert [task.id for task in tasks] == ["S1", "S2"]
    assert tasks.repeats == 1
    with pytest.raises(TaskInputError, match=r"line 3: task id 'S1' repeats line 1 with different content"):
        parse_tasks("S1\techo 1\nS2\techo 2\nS1\techo other\n", "c")


def test_ids_and_a_template():
    tasks = tasks_from_ids("S1\n\nS2\n", "bwa mem ref.fa {id}.fq > ${OUT}/{id}.sam", "align")
    assert [task.command for task in tasks] == [
        "bwa mem ref.fa S1.fq > ${OUT}/S1.sam",
        "bwa mem ref.fa S2.fq > ${OUT}/S2.sam",
    ]
    with pytest.raises(TaskInputError, match="empty command template"):
        tasks_from_ids("S1\n", "  ", "align")
    with pytest.raises(TaskInputError, match=r"ids line 2: invalid task id 'bad id'"):
        tasks_from_ids("S1\nbad id\n", "echo {id}", "align")


def test_empty_input_and_bad_collection_names_are_errors():
    with pytest.raises(TaskInputError, match="no tasks"):
        parse_tasks("\n# only a comment\n", "c")
    with pytest.raises(TaskInputError, match="invalid collection name"):
        parse_tasks("S1\techo\n", "bad/name")


def test_dependency_references():
    assert dependency_ref("S1", "align") == "align/S1"
    assert dependency_ref("qc/S1", "align") == "qc/S1"
    with pytest.raises(TaskInputError):
        dependency_ref("qc/", "align")
    with pytest.raises(TaskInputError, match="depends on itself"):
        parse_tasks('{"id": "S1", "command": "x", "depends_on": ["S1"]}', "align")

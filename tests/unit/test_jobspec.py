import pytest

from flows.script_jobs.spec import JobSpecError, language_of, parse_job_spec

SEED_JOB = {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "name": "Test job", "script": "test.r"}


def test_seed_job_description_is_valid_and_r():
    spec = parse_job_spec(SEED_JOB)
    assert spec.language == "r"
    assert spec.func == "myfunc"
    assert spec.arguments == {"a": 1, "b": 2}
    assert spec.retries == 0 and spec.timeout_seconds is None


@pytest.mark.parametrize(
    ("script", "language"),
    [("a.py", "python"), ("x/b.sh", "shell"), ("c.R", "r"), ("c.r", "r"), ("d.txt", None), ("noext", None)],
)
def test_language_from_extension(script, language):
    assert language_of(script) == language


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"name": None}, "name", "missing"),
        ({"name": ""}, "name", "at least 1"),
        ({"script": "job.txt"}, "script", "cannot tell the language"),
        ({"script": "job.py", "func": None}, "func", "required for python"),
        ({"func": "not a name!"}, "func", "not a function name"),
        ({"arguments": [1, 2]}, "arguments", "dictionary"),
        ({"argumnets": {}}, "argumnets", "unknown field"),
        ({"timeout_seconds": 0}, "timeout_seconds", "greater than 0"),
        ({"retries": 99}, "retries", "less than or equal to 10"),
        ({"language": "cobol"}, "language", "python"),
    ],
)
def test_invalid_descriptions_name_the_bad_field(change, field, words):
    document = {**SEED_JOB, **change}
    document = {key: value for key, value in document.items() if value is not None}
    with pytest.raises(JobSpecError) as raised:
        parse_job_spec(document)
    assert raised.value.field == field
    assert words in str(raised.value)
    assert str(raised.value).startswith(f"invalid job description: {field}:")


def test_not_an_object():
    with pytest.raises(JobSpecError, match="expected a JSON object, got list"):
        parse_job_spec([SEED_JOB])


def test_shell_func_is_optional_and_explicit_language_wins():
    spec = parse_job_spec({"name": "wc", "script": "count.sh"})
    assert spec.language == "shell" and spec.func is None
    spec = parse_job_spec({"name": "x", "script": "tool", "language": "shell"})
    assert spec.language == "shell"


def test_the_data_bucket_layout_is_the_architectures():
    from flows.script_jobs.layout import job_spec_key, log_key, result_key, script_key

    assert job_spec_key("j1") == "jobs/j1.json"
    assert script_key("j1/add.py") == "scripts/j1/add.py"
    assert result_key("j1") == "results/j1/result.json"
    assert log_key("j1") == "logs/j1.log"


def test_arguments_up_to_the_limit_are_accepted_and_over_it_refused():
    from flows.script_jobs.spec import MAX_ARGUMENTS_BYTES

    overhead = len('{"blob":""}')
    fits = {**SEED_JOB, "arguments": {"blob": "x" * (MAX_ARGUMENTS_BYTES - overhead)}}
    assert len(parse_job_spec(fits).arguments["blob"]) == MAX_ARGUMENTS_BYTES - overhead
    with pytest.raises(JobSpecError) as raised:
        parse_job_spec({**SEED_JOB, "arguments": {"blob": "x" * (MAX_ARGUMENTS_BYTES - overhead + 1)}})
    assert raised.value.field == "arguments" and "over the limit" in raised.value.message

"""Submit-file validation: every refusal, with examples and with Hypothesis properties."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from flows.submissions.validation import (
    SubmissionRefused,
    check_key,
    dataset_labels,
    parse_submission,
    refusal_prefix,
    results_prefix,
    status_file_name,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "neurocaas"
BUCKET = "cianalysispermastack"
KEY = "traviscipermagroup/submissions/submit.json"
GROUP = "traviscipermagroup"


def submit(**changes):
    document = {
        "dataname": f"{GROUP}/inputs/dataset1.json",
        "configname": f"{GROUP}/configs/config_None_None.json",
        "timestamp": "value_text",
    }
    document.update(changes)
    return {name: value for name, value in document.items() if value is not ...}


def test_the_seed_example_is_accepted_with_the_seed_layout():
    submission = parse_submission(BUCKET, KEY, submit())
    assert submission.group == GROUP
    assert submission.results_prefix == f"{GROUP}/results/job__{BUCKET}_value_text/"
    [dataset] = submission.datasets
    assert dataset.key == f"{GROUP}/inputs/dataset1.json"
    assert status_file_name(dataset) == "DATASET_NAME:dataset1.json_STATUS.txt"


def test_neurocaas_style_timestamps_are_accepted():
    submission = parse_submission(BUCKET, KEY, submit(timestamp="23:05:47.219155condition_0_2"))
    assert submission.results_prefix.endswith("job__cianalysispermastack_23:05:47.219155condition_0_2/")


def test_a_list_fans_out_with_unique_labels_and_directories():
    submission = parse_submission(
        BUCKET,
        KEY,
        submit(dataname=[f"{GROUP}/inputs/a/x.csv", f"{GROUP}/inputs/b/x.csv", f"{GROUP}/inputs/pbmc/"]),
    )
    assert [d.label for d in submission.datasets] == ["x.csv", "x.csv-2", "pbmc"]
    assert [d.is_directory for d in submission.datasets] == [False, False, True]


REFUSALS = [
    # shape
    (["not", "an", "object"], "must be a JSON object"),
    (submit(instance_type=""), "instance_type must be a non-empty string"),
    (submit(dataname=...), "dataname is missing"),
    (submit(configname=...), "configname is missing"),
    (submit(timestamp=...), "timestamp is missing"),
    (submit(dataname=7), "dataname must be a string or a list of strings"),
    (submit(dataname=[]), "dataname is an empty list"),
    (submit(dataname=[f"{GROUP}/inputs/a.csv", 3]), "dataname[1] must be a string"),
    (submit(dataname=[f"{GROUP}/inputs/a.csv"] * 2), "more than once"),
    (submit(dataname=[f"{GROUP}/inputs/{i}.csv" for i in range(101)]), "at most 100"),
    (submit(configname=None), "configname must be a string"),
    (submit(dataname=""), "dataname is empty"),
    # cross-group, other buckets, absolute paths, traversal
    (submit(dataname="othergroup/inputs/dataset1.json"), "belongs to group 'othergroup'"),
    (submit(configname="othergroup/configs/config.json"), "belongs to group 'othergroup'"),
    (submit(dataname=f"{GROUP}/inputs/../../othergroup/inputs/x.json"), "contains '..'"),
    (submit(dataname=f"{GROUP}/inputs/.."), "contains '..'"),
    (submit(configname=f"{GROUP}/configs/../inputs/x.json"), "contains '..'"),
    (submit(dataname=f"/{GROUP}/inputs/dataset1.json"), "absolute path"),
    (submit(dataname=f"s3://otherbucket/{GROUP}/inputs/dataset1.json"), "is a URL"),
    (submit(dataname=f"https://example.org/{GROUP}/inputs/x"), "is a URL"),
    (submit(dataname=f"{GROUP}/inputs\\..\\x"), "backslash"),
    (submit(dataname=f"{GROUP}/inputs/a\\b.csv"), "backslash"),
    (submit(dataname=f"{GROUP}/inputs//x.json"), "empty or '.' path segment"),
    (submit(dataname=f"{GROUP}/inputs/./x.json"), "empty or '.' path segment"),
    (submit(dataname=f"{GROUP}/inputs/x\x00.json"), "control characters"),
    (submit(dataname=f"{GROUP}/configs/config.json"), "is not under traviscipermagroup/inputs/"),
    (submit(dataname=f"{GROUP}/results/job__x/out.csv"), "is not under traviscipermagroup/inputs/"),
    (submit(dataname=f"{GROUP}/inputs/"), "names the inputs/ folder itself"),
    (submit(configname=f"{GROUP}/configs/config.txt"), "must be a .json or .yaml file"),
    (submit(configname=f"{GROUP}/submissions/config.json"), "is not under traviscipermagroup/configs/ or"),
    (submit(dataname="x" * 2000), "longer than 1024"),
    # timestamps
    (submit(timestamp=5.5), "timestamp must be a string"),
    (submit(timestamp=True), "timestamp must be a string"),
    (submit(timestamp="../../other"), "not a safe path segment"),
    (submit(timestamp="a/b"), "not a safe path segment"),
    (submit(timestamp=""), "not a safe path segment"),
    (submit(timestamp="   "), "not a safe path segment"),
    (submit(timestamp=".."), "not a safe path segment"),
    (submit(timestamp="a\\b"), "not a safe path segment"),
    (submit(timestamp="a\nb"), "not a safe path segment"),
    (submit(timestamp="x" * 129), "not a safe path segment"),
    (submit(timestamp="t__refused-0000"), "not a safe path segment"),
]


@pytest.mark.parametrize(("document", "words"), REFUSALS)
def test_every_refusal_says_why(document, words):
    with pytest.raises(SubmissionRefused) as refused:
        parse_submission(BUCKET, KEY, document)
    assert words in refused.value.reason


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("group/submit.json", "is not a submission key"),
        ("group/submissions/nested/submit.json", "is not a submission key"),
        ("group/submissions/submit.txt", "is not a submission key"),
        ("../submissions/submit.json", "not a safe name"),
        ("gr oup/submissions/submit.json", "not a safe name"),
    ],
)
def test_the_group_comes_from_a_well_formed_key(key, words):
    with pytest.raises(SubmissionRefused, match=words):
        parse_submission(BUCKET, key, submit())


def test_refusal_folders_never_collide_with_job_folders():
    refused = refusal_prefix(GROUP, BUCKET, "value_text", "identity")
    assert refused.startswith(f"{GROUP}/results/job__{BUCKET}_value_text__refused-")
    assert refused != results_prefix(GROUP, BUCKET, "value_text")
    with pytest.raises(SubmissionRefused):  # no timestamp can name a refusal folder
        parse_submission(BUCKET, KEY, submit(timestamp=refused.rstrip("/").rsplit("_value_text", 1)[1]))


# ---- properties ----------------------------------------------------------------------------------

groups = st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z")
segments = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
anything = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(group=groups, value=st.one_of(anything, st.lists(segments, min_size=0, max_size=6).map("/".join)))
@example(group="lab", value="lab/inputs/../../other/inputs/x")
@example(group="lab", value="lab/inputs/%2e%2e/x")
def test_an_accepted_dataname_is_always_inside_the_groups_inputs(group, value):
    """Whatever the string, acceptance implies: under {group}/inputs/, relative, no traversal."""
    try:
        accepted = check_key(value, group=group, area="inputs", field="dataname", allow_directory=True)
    except SubmissionRefused:
        return
    assert accepted.startswith(f"{group}/inputs/")
    parts = accepted.rstrip("/").split("/")
    assert ".." not in parts and "." not in parts and "" not in parts and len(parts) >= 3
    assert "://" not in accepted and "\\" not in accepted and not accepted.startswith("/")


@settings(max_examples=200, deadline=None)
@given(
    group=groups,
    other=groups,
    tail=st.lists(segments, min_size=1, max_size=4).map("/".join),
    area=st.sampled_from(["inputs", "configs"]),
)
def test_another_groups_paths_are_always_refused(group, other, tail, area):
    assume(other != group)
    name = f"{other}/{area}/{tail}"
    with pytest.raises(SubmissionRefused) as refused:
        check_key(name, group=group, area=area, field="dataname")
    assert f"belongs to group {other!r}" in refused.value.reason


@settings(max_examples=200, deadline=None)
@given(
    group=groups,
    before=st.lists(segments, min_size=0, max_size=3),
    after=st.lists(segments, min_size=0, max_size=3),
    dots=st.sampled_from(["..", "../..", "../../.."]),
)
def test_traversal_anywhere_is_refused(group, before, after, dots):
    name = "/".join([group, "inputs", *before, dots, *after])
    with pytest.raises(SubmissionRefused, match=r"contains '\.\.'"):
        check_key(name, group=group, area="inputs", field="dataname")


@settings(max_examples=200, deadline=None)
@given(
    group=groups,
    prefix=st.sampled_from(["/", "s3://", "S3://", "https://", "file://", "arn:aws:s3:::"]),
    rest=anything,
)
def test_absolute_paths_and_urls_are_refused(group, prefix, rest):
    with pytest.raises(SubmissionRefused):
        check_key(prefix + f"{group}/inputs/" + rest, group=group, area="inputs", field="dataname")


@settings(max_examples=300, deadline=None)
@given(timestamp=anything)
def test_an_accepted_timestamp_is_one_path_segment(timestamp):
    try:
        parse_submission(BUCKET, KEY, submit(timestamp=timestamp))
    except SubmissionRefused:
        return
    assert "/" not in timestamp and "\\" not in timestamp and timestamp not in (".", "..")
    assert results_prefix(GROUP, BUCKET, timestamp).count("/") == 3


# ---- real NeuroCAAS submit files (tests/fixtures/neurocaas/) ------------------------------------


def test_real_submit_files_are_accepted_with_their_extra_fields():
    """The NeuroCAAS interface client's example submit (with ``exitcode``) and the CLI docs' form."""
    example = json.loads((FIXTURES / "condition_test_interface_submit.json").read_text())
    submission = parse_submission(BUCKET, KEY, example)
    assert submission.timestamp == "00:00:00.000001test_inter"
    assert submission.extras == {"exitcode": 0}
    assert submission.results_prefix == f"{GROUP}/results/job__{BUCKET}_00:00:00.000001test_inter/"
    docs = json.loads((FIXTURES / "cli_docs_submit.json").read_text())
    submission = parse_submission("caiman-ncap-web", "user1/submissions/submit.json", docs)
    assert [d.key for d in submission.datasets] == ["user1/inputs/data"]
    assert submission.configname == "user1/configs/config.yaml"


def test_instance_type_is_kept_and_unknown_fields_are_not_a_refusal():
    submission = parse_submission(
        BUCKET, KEY, submit(instance_type="p3.2xlarge", resultpath="s3://out/x", note="hello")
    )
    assert submission.instance_type == "p3.2xlarge"
    assert set(submission.extras) == {"instance_type", "resultpath", "note"}


def test_configs_may_be_yaml_and_live_under_inputs():
    for name in (f"{GROUP}/configs/config.yaml", f"{GROUP}/inputs/config.yaml", f"{GROUP}/inputs/sub/c.json"):
        assert parse_submission(BUCKET, KEY, submit(configname=name)).configname == name


def test_timestamps_with_spaces_and_numbers_name_the_folder_as_given():
    """The website's timestamp is ``str(int(time.time()))``; a user's may hold spaces: the folder is
    exactly ``job__{bucket}_{timestamp}``, where the client and the website look."""
    spaced = parse_submission(BUCKET, KEY, submit(timestamp="run 1 of 3"))
    assert spaced.results_prefix == f"{GROUP}/results/job__{BUCKET}_run 1 of 3/"
    assert parse_submission(BUCKET, KEY, submit(timestamp=1700000000)).timestamp == "1700000000"


def test_status_files_keep_the_raw_basename():
    submission = parse_submission(BUCKET, KEY, submit(dataname=f"{GROUP}/inputs/Trial     3.csv"))
    [dataset] = submission.datasets
    assert status_file_name(dataset) == "DATASET_NAME:Trial     3.csv_STATUS.txt"
    assert dataset.stem == "Trial     3"


def test_an_ensemble_makes_numbered_runs_of_one_dataset():
    runs = dataset_labels([f"{GROUP}/inputs/video.mp4"], ensemble_size=3)
    assert [(r.jobnb, r.label, r.stem) for r in runs] == [
        (1, "video.mp4_inst1", "video_inst1"),
        (2, "video.mp4_inst2", "video_inst2"),
        (3, "video.mp4_inst3", "video_inst3"),
    ]
    assert {r.key for r in runs} == {f"{GROUP}/inputs/video.mp4"}


def test_resultpath_goes_only_where_storage_bypass_is_allowed():
    from flows.submissions.flow import _result_target
    from flows.submissions.quotas import SubmissionSettings

    prefix = "lab/results/job__b_t1/"
    allowed = SubmissionSettings(submission_resultpath_allowed=["out-bucket/labs/lab"])
    assert _result_target("s3://out-bucket/labs/lab/run", prefix, allowed) == (
        "out-bucket",
        "labs/lab/run/job__b_t1/process_results/",
    )
    assert _result_target("out-bucket/labs/lab", prefix, allowed)[0] == "out-bucket"
    for refused in ("s3://out-bucket/labs/lab2", "s3://other/labs/lab", "s3://out-bucket/labs/lab/../x"):
        reason = _result_target(refused, prefix, allowed)
        assert isinstance(reason, str) and "INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED" in reason, refused
    assert "is not an S3 location" in _result_target(["s3://x"], prefix, allowed)
    assert "nowhere: storage bypass is not enabled" in _result_target(
        "s3://x/y", prefix, SubmissionSettings(submission_resultpath_allowed=[])
    )

"""Registered submission analyses, quotas and the `submissions` CLI's offline checks."""

from __future__ import annotations

import argparse
import json

import pytest

from flows.submissions.client import UploadError, parse_results_path, upload_submission
from flows.submissions.quotas import SubmissionSettings, quota_for
from flows.submissions.registry import REGISTRY, ConfigRefused, check_inputs, input_kind, parse_config
from interlinked.commands.submissions import register


def test_describe_and_single_cell_are_registered():
    assert {"describe", "single-cell"} <= set(REGISTRY)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([], "must be a JSON or YAML mapping"),
        ({}, "config: no analysis key, this is the shared bucket"),
        ({"analysis": "describe", "__duration__": 0}, "__duration__"),
        ({"analysis": "describe", "ensemble_size": "3"}, "ensemble_size"),
        ({"analysis": "describe", "__dataset_size__": -1}, "__dataset_size__"),
        ({"analysis": "nope"}, "'nope' is not registered (registered: describe, single-cell"),
        ({"analysis": "describe", "params": {"include": "everything"}}, "params of 'describe': include"),
        ({"analysis": "describe", "params": {"percentiles": [2]}}, "percentiles must be between 0 and 1"),
        ({"analysis": "describe", "params": {"colour": "red"}}, "colour: unknown field"),
        ({"analysis": "single-cell", "params": {"resolution": 0}}, "resolution"),
        # Parameters that drive the cost have upper bounds.
        (
            {"analysis": "single-cell", "params": {"n_pcs": 5000}},
            "n_pcs: Input should be less than or equal to 200",
        ),
        (
            {"analysis": "single-cell", "n_top_genes": 10**6},
            "n_top_genes: Input should be less than or equal to 20000",
        ),
        ({"analysis": "single-cell", "params": {"n_neighbors": 10**4}}, "n_neighbors"),
        ({"analysis": "describe", "duration_hours": -1}, "duration_hours"),
        ({"analysis": "describe", "include": "everything"}, "params of 'describe': include"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(document, words):
    with pytest.raises(ConfigRefused) as refused:
        parse_config(document)
    assert words in str(refused.value)


def test_every_run_has_a_time_limit_with_a_floor():
    from flows.submissions.flow import time_limit_seconds, time_limit_text

    assert time_limit_seconds(parse_config({"analysis": "describe", "__duration__": 30})) == 1800
    assert time_limit_seconds(parse_config({"analysis": "describe"})) == 180  # the analysis' default
    tiny = parse_config({"analysis": "describe", "duration_hours": 1e-9})
    assert time_limit_seconds(tiny) == 60  # the floor: a tiny declared duration still gets a minute
    assert time_limit_text(tiny).startswith("1 minute (the floor; duration_hours asks for")


def test_cost_estimate_uses_the_declared_duration():
    config = parse_config({"analysis": "describe", "duration_hours": 0.5})
    assert config.estimated_cost(datasets=3, price_per_hour=2.0) == 3.0
    assert (
        parse_config({"analysis": "single-cell"}).duration_hours
        == REGISTRY["single-cell"].default_duration_hours
    )


def test_inputs_must_suit_the_analysis():
    assert input_kind("g/inputs/pbmc/") == "10x-dir" and input_kind("g/inputs/t.CSV.gz") == ".csv.gz"
    check_inputs(parse_config({"analysis": "single-cell"}), ["g/inputs/a.h5ad", "g/inputs/pbmc/"])
    with pytest.raises(ConfigRefused, match="cannot be read by 'describe'"):
        check_inputs(parse_config({"analysis": "describe"}), ["g/inputs/a.h5ad"])


def test_describe_summarises_csv_and_json(tmp_path):
    analysis = REGISTRY["describe"]
    (tmp_path / "t.csv").write_text("a,b\n1,x\n3,y\n")
    (tmp_path / "t.json").write_text(json.dumps([{"a": 1}, {"a": None}, {"a": 5}]))
    for name in ("t.csv", "t.json"):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        summary = analysis.run(tmp_path / name, analysis.params(), out, lambda *_: None)
        assert summary["rows"] in (2, 3) and (out / "describe.csv").exists()
        written = json.loads((out / "summary.json").read_text())
        assert written["describe"]["a"]["max"] in (3.0, 5.0)
    (tmp_path / "broken.csv").write_text("")
    with pytest.raises(ValueError, match=r"cannot read broken\.csv"):
        analysis.run(tmp_path / "broken.csv", analysis.params(), tmp_path, lambda *_: None)


def test_group_quotas_layer_environment_over_defaults(monkeypatch):
    monkeypatch.setenv("INTERLINKED_SUBMISSION_BUDGET", "12.5")
    monkeypatch.setenv("INTERLINKED_SUBMISSION_GROUPS", json.dumps({"lab-a": {"max_concurrent_jobs": 1}}))
    settings = SubmissionSettings()
    quota = quota_for("lab-a", settings=settings, use_variable=False)
    assert quota.max_concurrent_jobs == 1 and quota.budget == 12.5
    assert quota_for("lab-b", settings=settings, use_variable=False).max_concurrent_jobs == 2


# ---- CLI -------------------------------------------------------------------------------------------


class NoS3:
    """Any S3 call is a test failure: invalid input must be refused before anything is touched."""

    def __getattr__(self, name):
        raise AssertionError(f"S3 was called ({name}) for an invalid submission")


def parser():
    root = argparse.ArgumentParser(prog="interlinked")
    register(root.add_subparsers(dest="command", required=True))
    return root


def test_upload_takes_several_datasets_between_group_and_config():
    args = parser().parse_args(
        ["submissions", "upload", "lab", "a.csv", "b.csv", "cfg.json", "--timestamp", "t1"]
    )
    assert (args.group, args.data, args.config, args.timestamp) == (
        "lab",
        ["a.csv", "b.csv"],
        "cfg.json",
        "t1",
    )
    args = parser().parse_args(["submissions", "watch", "s3://b/lab/results/job__b_t1/"])
    assert args.results_path == "s3://b/lab/results/job__b_t1/" and args.func.__name__ == "cmd_watch"


@pytest.mark.parametrize(
    ("group", "config", "timestamp", "words"),
    [
        ("../x", {"analysis": "describe"}, "t1", "is not a safe name"),
        ("lab", {"analysis": "describe"}, "a/b", "not a safe path segment"),
        ("lab", {"analysis": "nope"}, "t1", "is not registered"),
        ("lab", {"analysis": "single-cell"}, "t1", "cannot be read by 'single-cell'"),
    ],
)
def test_upload_refuses_before_touching_s3(tmp_path, group, config, timestamp, words):
    data = tmp_path / "table.csv"
    data.write_text("a\n1\n")
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    with pytest.raises(UploadError, match=words):
        upload_submission(group, [str(data)], str(config_path), timestamp=timestamp, s3=NoS3(), bucket="b")


def test_results_paths_are_parsed_with_or_without_the_bucket():
    assert parse_results_path("s3://bkt/lab/results/job__bkt_t1", None) == ("bkt", "lab/results/job__bkt_t1/")
    assert parse_results_path("lab/results/job__bkt_t1/", "bkt") == ("bkt", "lab/results/job__bkt_t1/")
    with pytest.raises(UploadError, match="not a results path"):
        parse_results_path("s3://bkt/lab/inputs/x.csv", None)

"""What NeuroCAAS users upload and what NeuroCAAS clients read, on an in-memory S3 (moto).

Real files from NeuroCAAS's repositories are in ``tests/fixtures/neurocaas/`` (sources in its
README); the readers in ``tests/neurocaas_client.py`` follow the real clients' rules (each names
its source). The whole path on the real stack is in ``tests/integration/test_submissions.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws
from neurocaas_client import (
    download_by_basename,
    get_instances,
    job_manager_steps,
    parse_certificate,
    read_status,
)

from blocks.s3 import ObjectStore
from flows.submissions.flow import JobContext, Run, _flat_name
from flows.submissions.folder import FAILED, IN_PROGRESS, INITIALIZING, SUCCESS, JobFolder
from flows.submissions.quotas import SubmissionSettings, analysis_for_bucket
from flows.submissions.registry import ConfigRefused, parse_config, parse_config_text
from flows.submissions.validation import dataset_labels, parse_submission, status_file_name

FIXTURES = Path(__file__).parents[1] / "fixtures" / "neurocaas"
GROUP = "traviscipermagroup"
BUCKET = "cianalysispermastack"
PREFIX = f"{GROUP}/results/job__{BUCKET}_1700000000/"


@pytest.fixture
def store(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield ObjectStore(BUCKET, client)


# ---- the readers, checked on real NeuroCAAS files first ------------------------------------------


def test_the_readers_read_a_real_certificate():
    text = (FIXTURES / "certificate.txt").read_text()
    rows = parse_certificate(text)
    assert list(rows) == ["debuggers/inputs/raw_data.zip"]
    assert rows["debuggers/inputs/raw_data.zip"]["STATUS"] == "IN PROGRESS"
    assert get_instances(text) == {
        1: {"id": "i-0ffd013d096ff1ba6", "dataset": "raw_data.zip"},
        2: {"id": "i-0568018e8e91f9d86", "dataset": "raw_data.zip"},
    }
    assert [step.rsplit(": ", 1)[1] for step in job_manager_steps(text)] == ["DONE"] * 4


def test_the_readers_read_real_status_files():
    for name in ("status_initial.json", "status_update.json"):
        assert read_status((FIXTURES / name).read_text())["instance"] == "i-00000000000000000"


# ---- real configs ----------------------------------------------------------------------------------


def test_a_real_free_form_yaml_config_is_read_with_its_reserved_keys():
    document = parse_config_text((FIXTURES / "params.yaml").read_bytes(), "params.yaml")
    config = parse_config(document, kinds=[".csv"])  # shared bucket, no analysis key: the inputs decide
    assert config.analysis.name == "describe" and config.chosen_by == "inputs"
    assert config.duration_minutes == 30 and config.duration_hours == 0.5
    assert config.dataset_size_gb == 300
    assert {"maxrank", "atlas_path", "lambda_init"} <= set(config.ignored)
    assert "__duration__" not in config.ignored
    nested = parse_config(yaml.safe_load((FIXTURES / "test1config.yaml").read_text()), kinds=[".h5ad"])
    assert nested.analysis.name == "single-cell" and nested.ignored == ("coordinates", "nests")


def test_the_bucket_is_the_analysis(monkeypatch):
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKETS", json.dumps({"describe": "describe-ncap-web"}))
    assert analysis_for_bucket("describe-ncap-web") == "describe"
    assert analysis_for_bucket(BUCKET) is None
    # There a config needs no analysis key, whatever the inputs; one naming another is refused.
    own = parse_config({"include": "number"}, bucket_analysis="describe", kinds=[".h5ad"])
    assert own.analysis.name == "describe" and own.chosen_by == "bucket"
    with pytest.raises(ConfigRefused, match="this bucket is the analysis 'describe'"):
        parse_config({"analysis": "single-cell"}, bucket_analysis="describe")
    assert SubmissionSettings().analysis_buckets == {"describe": "describe-ncap-web"}


def test_without_an_analysis_key_the_shared_bucket_refuses_naming_the_choices():
    with pytest.raises(ConfigRefused, match=r'no registered analysis reads \.mp4: add "analysis": one of'):
        parse_config({"__duration__": 10}, kinds=[".mp4"])
    assert parse_config({"analysis": "describe"}, kinds=[".h5ad"]).chosen_by == "config"


def test_bad_yaml_is_refused_saying_so():
    with pytest.raises(ConfigRefused, match="is not valid YAML"):
        parse_config_text(b"a: [1, 2", "c.yaml")
    with pytest.raises(ConfigRefused, match="is not valid JSON"):
        parse_config_text(b"{", "c.json")


def test_an_ensemble_run_gets_its_jobnb_and_its_own_seed():
    config = parse_config({"analysis": "single-cell", "ensemble_size": 3, "mode": "train", "random_state": 7})
    assert config.ensemble_size == 3 and config.mode == "train"
    assert [config.run_params(n).random_state for n in (1, 2, 3)] == [7, 8, 9]
    assert config.run_config(2) == {
        "analysis": "single-cell",
        "ensemble_size": 3,
        "mode": "train",
        "random_state": 7,
        "jobnb": 2,
    }


# ---- what we write, read the NeuroCAAS way ----------------------------------------------------------


def _context(store: ObjectStore, submission, config) -> JobContext:
    folder = JobFolder(store, PREFIX, job_id=submission.timestamp)
    return JobContext(
        store=store,
        folder=folder,
        submission=submission,
        config=config,
        instance_type="default",
        price_per_hour=1.0,
    )


def test_our_certificate_and_status_files_read_as_the_client_reads_them(store):
    submission = parse_submission(
        BUCKET, f"{GROUP}/submissions/submit.json", json.loads((FIXTURES / "website_submit.json").read_text())
    )
    config = parse_config({"analysis": "describe"})
    context = _context(store, submission, config)
    folder = context.folder
    folder.line("[Internal (init)] Initializing job manager.", internal=True)
    folder.step(1, "Initialization")
    runs = []
    for number, dataset in enumerate(submission.datasets, start=1):
        run = Run(dataset=dataset, number=number, instance=f"i-{number:017x}", command=f"c-{number}")
        runs.append(run)
        folder.line(f"[Utils] New instance ec2.Instance(id='{run.instance}') created!", internal=True)
        run.steps.append("initialize")
        context.write_status(run, status=INITIALIZING)
    for run in runs:
        folder.line(
            f"[Internal (process_inputs)] Starting analysis {run.number} with parameter set {run.dataset.name}",
            internal=True,
        )
    folder.step(4, "Initialize Processing")
    first, second = runs
    first.steps.append("describe")
    first.stdout.append("reading")
    context.write_status(first, status=IN_PROGRESS, job_start="2026-01-01T00:00:00Z")
    second.stderr.append("ValueError: no rows")
    context.write_status(second, status=FAILED, job_finish="2026-01-01T00:00:01Z")
    context.write_status(first, status=SUCCESS, job_finish="2026-01-01T00:00:02Z")

    text = store.read_text(PREFIX + "logs/certificate.txt")
    rows = parse_certificate(text)
    # The client's dataname stops at the first space ("Trial     3.csv" reads as ".../Trial"): a
    # limit of the real client; the row itself is there and complete.
    assert list(rows) == [f"{GROUP}/inputs/dataset1.json", f"{GROUP}/inputs/Trial"]
    assert [row["STATUS"] for row in rows.values()] == [SUCCESS, FAILED]
    assert f"DATANAME: {GROUP}/inputs/Trial     3.csv | STATUS: FAILED" in text
    assert all(row["CPU_USAGE"].endswith("%") for row in rows.values())
    assert get_instances(text) == {
        1: {"id": "i-00000000000000001", "dataset": "dataset1.json"},
        2: {"id": "i-00000000000000002", "dataset": "Trial     3.csv"},
    }
    assert job_manager_steps(text) == [
        "[Job Manager] STEP 1/4 (Initialization): DONE",
        "[Job Manager] STEP 4/4 (Initialize Processing): DONE",
    ]
    # The same layout as the real certificate, line for line, from the monitoring block's end on.
    ours, real = text.split("\n"), (FIXTURES / "certificate.txt").read_text().split("\n")
    assert (
        ours[ours.index("JOB MANAGER SETUP LOG:") - 5 :][:6]
        == real[real.index("JOB MANAGER SETUP LOG:") - 5 :][:6]
    )
    after = ours[ours.index("JOB MANAGER SETUP LOG:") + 1 :]
    assert [line.split(":")[0] for line in after[:3]] == [
        "REQUEST START TIME",
        "ANALYSIS VERSION ID",
        "JOB ID",
    ]
    assert after[2].startswith("JOB ID: 1700000000\t [+0:00:") and after[3:5] == ["", " "]

    # Status files: the raw basename in the name, NeuroCAAS's words and fields.
    names = sorted(key.rsplit("/", 1)[-1] for key in store.keys(PREFIX + "logs/DATASET_NAME:"))
    assert names == ["DATASET_NAME:Trial     3.csv_STATUS.txt", "DATASET_NAME:dataset1.json_STATUS.txt"]
    done = read_status(store.read_text(PREFIX + "logs/" + status_file_name(first.dataset)), live=True)
    assert done["status"] == SUCCESS and done["input"] == f"{GROUP}/inputs/dataset1.json"
    assert done["reason"] == ["initialize", "describe"] and done["stdout"] == {"0": "reading"}
    assert done["job_start"] == "2026-01-01T00:00:00Z" and done["job_finish"] == "2026-01-01T00:00:02Z"
    assert done["memory_usage"].endswith(" MB") and done["cpu_usage"].endswith(" %")
    failed = read_status(store.read_text(PREFIX + "logs/" + status_file_name(second.dataset)), live=True)
    assert failed["status"] == FAILED and failed["stderr"] == {"0": "ValueError: no rows"}
    assert failed["job_start"] == "N/A"


def test_outputs_are_flat_and_never_overwrite_each_other_when_downloaded():
    keys = [f"{GROUP}/inputs/a/x.csv", f"{GROUP}/inputs/b/x.csv", f"{GROUP}/inputs/x.json"]
    runs = [Run(dataset=d, number=i, instance="i", command="c") for i, d in enumerate(dataset_labels(keys))]
    written = [
        PREFIX + "process_results/" + _flat_name(run, name) for run in runs for name in ("summary.json",)
    ]
    written += [PREFIX + "process_results/config.yaml", PREFIX + "process_results/end.txt"]
    saved = download_by_basename(written, PREFIX.rstrip("/"))
    assert sorted(saved) == [
        "config.yaml",
        "end.txt",
        "x-2_summary.json",
        "x-3_summary.json",
        "x_summary.json",
    ]
    ensemble = [
        Run(dataset=d, number=i, instance="i", command="c")
        for i, d in enumerate(dataset_labels([f"{GROUP}/inputs/v.mp4"], ensemble_size=2))
    ]
    assert [_flat_name(run, "out/model.pt") for run in ensemble] == [
        "v_inst1_out_model.pt",
        "v_inst2_out_model.pt",
    ]


def test_a_re_upload_waits_for_a_running_job_then_is_refused_and_takes_over_an_ended_one(store, monkeypatch):
    from flows.submissions import flow as flow_module
    from flows.submissions.folder import END, claim_folder

    first = {
        "submission": "s3://b/k",
        "key": f"{GROUP}/submissions/submit.json",
        "etag": "e1",
        "flow_run_id": "r1",
    }
    second = {**first, "etag": "e2", "flow_run_id": "r2"}
    claim_folder(store, PREFIX, first)
    monkeypatch.setattr(flow_module, "_active", lambda run_id: run_id == "r1")
    quick = SubmissionSettings(submission_rerun_wait_seconds=0)
    claim, busy = flow_module._claim(store, PREFIX, second, "r2", quick)
    assert claim is None and "still running" in busy and "r1" in busy
    assert store.read_json(PREFIX + "logs/submission.json")["etag"] == "e1"  # untouched
    store.put(PREFIX + END, b"COMPLETED")  # the first job ended: the re-upload takes over
    claim, busy = flow_module._claim(store, PREFIX, second, "r2", quick)
    assert claim is not None and claim.ours and busy is None
    assert not store.exists(PREFIX + END)
    assert store.read_json(PREFIX + "logs/submission.json")["etag"] == "e2"

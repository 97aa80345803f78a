"""The S3 side of a submission on an in-memory S3 (moto): the folder claim, the budget ledger and
reading a results folder, all through ``blocks.s3.ObjectStore``."""

from __future__ import annotations

import io

import boto3
import pytest
from moto import mock_aws

from blocks.s3 import ObjectStore
from flows.submissions.client import watch_results
from flows.submissions.folder import CLAIM, END, JobFolder, claim_folder, supersede
from flows.submissions.quotas import OverBudget, charge_budget, ledger_key, settle_budget

PREFIX = "lab/results/job__b_t1/"


@pytest.fixture
def store(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lab-bucket")
        yield ObjectStore("lab-bucket", client)


def identity(etag: str) -> dict[str, str]:
    return {"submission": "s3://b/lab/submissions/s.json", "key": "lab/submissions/s.json", "etag": etag}


def test_a_folder_belongs_to_the_first_submission_only(store):
    first = claim_folder(store, PREFIX, identity("e1"))
    assert first.ours and first.fresh
    rerun = claim_folder(store, PREFIX, identity("e1"))
    assert rerun.ours and not rerun.fresh and rerun.record["claimed_at"] == first.record["claimed_at"]
    other = claim_folder(store, PREFIX, identity("e2"))
    assert not other.ours and other.record["etag"] == "e1"
    assert store.read_json(PREFIX + CLAIM)["etag"] == "e1"


def test_the_ledger_charges_each_job_once_and_refuses_over_budget(store):
    def charge(job: str, cost: float) -> dict[str, float]:
        return charge_budget(store, group="lab", job=job, cost=cost, budget=1.0, detail={"submission": job})

    assert charge("job-1", 0.6) == {"spent": 0.6, "budget": 1.0, "remaining": 0.4}
    assert charge("job-1", 0.6)["spent"] == 0.6  # a re-run is not charged again
    with pytest.raises(OverBudget, match=r"exceeds the remaining budget of group 'lab': 0\.4 of 1 left"):
        charge("job-2", 0.5)
    assert charge("job-3", 0.4)["remaining"] == 0.0
    assert set(store.read_json(ledger_key("lab"))["jobs"]) == {"job-1", "job-3"}


def test_settling_charges_the_measured_cost_once_and_frees_the_rest(store):
    """A submit file that declares a long duration is charged that bound up front; once its runs
    have ended, the measured cost replaces it, and the difference is free again."""
    charge_budget(store, group="lab", job="job-1", cost=0.9, budget=1.0, detail={})
    with pytest.raises(OverBudget):
        charge_budget(store, group="lab", job="job-2", cost=0.5, budget=1.0, detail={})
    assert settle_budget(store, group="lab", job="job-1", cost=0.02, budget=1.0) == {
        "spent": 0.02,
        "budget": 1.0,
        "remaining": 0.98,
    }
    assert settle_budget(store, group="lab", job="job-1", cost=0.5, budget=1.0) is None  # once only
    assert settle_budget(store, group="lab", job="job-unknown", cost=0.5, budget=1.0) is None
    entry = store.read_json(ledger_key("lab"))["jobs"]["job-1"]
    assert entry["cost"] == 0.02 and entry["estimate"] == 0.9 and entry["settled_at"]
    assert charge_budget(store, group="lab", job="job-2", cost=0.5, budget=1.0, detail={})["spent"] == 0.52


def test_watch_prints_the_certificate_and_returns_the_end_status(store):
    folder = JobFolder(store, PREFIX, job_id="t1")
    folder.line("[Internal (init)] Initializing job manager.", internal=True, status="VALIDATING")
    folder.step(1, "Initialization")
    folder.monitor("t.csv", "lab/inputs/t.csv", "SUCCESS", "done", "3.0 %")
    folder.line("[Job Manager] JOB FINISHED: COMPLETED. 1 of 1 dataset(s) succeeded", status="COMPLETED")
    folder.end("COMPLETED", "1 of 1 dataset(s) succeeded")
    out = io.StringIO()
    assert watch_results(store, PREFIX, timeout=5, interval=0.1, out=out) == "COMPLETED"
    text = out.getvalue()
    assert "JOB ID: t1" in text and "[Job Manager] STEP 1/4 (Initialization): DONE" in text
    assert "\t [+" not in text  # the times are dropped when printing
    assert "DATANAME: lab/inputs/t.csv | STATUS: SUCCESS" in text
    assert "end.txt: COMPLETED — 1 of 1 dataset(s) succeeded — finished " in text
    assert (
        watch_results(store, "lab/results/job__b_none/", timeout=0, interval=0.1, out=io.StringIO()) is None
    )


def test_a_re_upload_takes_over_a_finished_folder_end_first_and_keeps_the_old_files(store):
    first = claim_folder(store, PREFIX, identity("e1"))
    store.put(PREFIX + "process_results/out.csv", b"old")
    store.put(PREFIX + "logs/certificate.txt", b"old certificate")
    store.put(PREFIX + END, b"COMPLETED")
    other = claim_folder(store, PREFIX, identity("e2"))
    assert not other.ours
    archive, moved = supersede(store, PREFIX, other, identity("e2"))
    assert moved == 2 and archive.startswith("lab/results/superseded/job__b_t1/")
    assert sorted(store.keys(PREFIX)) == [PREFIX + CLAIM]  # end.txt and the old files are gone
    assert store.read_json(PREFIX + CLAIM)["etag"] == "e2"
    assert store.read_json(PREFIX + CLAIM)["supersedes"]["claimed_at"] == first.record["claimed_at"]
    assert store.read_bytes(archive + "process_results/out.csv") == b"old"
    assert store.read_bytes(archive + END) == b"COMPLETED"
    assert not archive.startswith("lab/results/job__b_t1")  # never where a client polls
    # The claim was replaced over the ETag read: a second taker with the stale claim loses.
    assert supersede(store, PREFIX, other, identity("e3")) is None
    assert claim_folder(store, PREFIX, identity("e2")).ours


def test_an_identical_re_upload_is_a_new_upload_by_its_time(store):
    """Same bytes, same ETag (an unversioned bucket): the upload time tells a re-upload from a
    duplicate delivery of the same upload."""
    claim_folder(store, PREFIX, {**identity("e1"), "last_modified": "2026-01-01T00:00:00+00:00"})
    again = claim_folder(store, PREFIX, {**identity("e1"), "last_modified": "2026-01-01T00:00:00+00:00"})
    later = claim_folder(store, PREFIX, {**identity("e1"), "last_modified": "2026-01-01T00:05:00+00:00"})
    assert again.ours and not later.ours

"""S3 submissions end to end: upload → S3 event → bridge → process-submission → results + end.txt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_bridge_fixtures import (
    bridge_env,
    final_run_for_key,
    flow_runs,
    listing,
    put_json,
    read_text,
    wait_for_object,
)

from _stack import ROOT, TEST_ENV

pytestmark = pytest.mark.integration

GROUP = "lab-sub"
OTHER = "lab-other"


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    environment = bridge_env(stack_handle, aws, tmp_path_factory)
    yield environment
    environment.consumer.stop()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The submissions commands, run the way `interlinked submissions ...` runs them."""
    return subprocess.run(
        [sys.executable, "-m", "interlinked.commands.submissions", "submissions", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **TEST_ENV},
        cwd=ROOT,
    )


def wait_until(check, *, timeout: float = 120, what: str = "a condition"):
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.3)


def results_path_of_client(group: str, bucket: str, timestamp: str) -> str:
    from neurocaas_client import results_prefix

    return results_prefix(group, bucket, timestamp)


def prefix(env, timestamp: str, group: str = GROUP) -> str:
    return f"{group}/results/job__{env.analysis}_{timestamp}/"


def end_of(env, timestamp: str, group: str = GROUP, timeout: float = 90) -> str:
    try:
        return wait_for_object(
            env.s3,
            env.analysis,
            prefix(env, timestamp, group) + "process_results/end.txt",
            timeout=timeout,
            consumer=env.consumer,
        )
    except AssertionError as error:
        raise AssertionError(
            f"{error}\ncertificate:\n{certificate(env, timestamp, group)}\n{evidence(env, timestamp, group)}"
        ) from None


def evidence(env, timestamp: str, group: str = GROUP) -> str:
    """What a missing end.txt leaves behind: the group's results keys of that timestamp (superseded
    folders included) and every process-submission run with its state, to tell a run that never
    started from one that ended elsewhere."""
    keys = [key for key in listing(env.s3, env.analysis, f"{group}/results/") if timestamp in key]
    runs = [
        f"{run.name} {run.parameters.get('key')} {run.state.name if run.state else None}: "
        f"{(run.state.message or '')[:200] if run.state else ''}"
        for run in flow_runs(flow_name="process-submission")
    ]
    return "results keys:\n  " + "\n  ".join(keys) + "\nprocess-submission runs:\n  " + "\n  ".join(runs)


def certificate(env, timestamp: str, group: str = GROUP) -> str:
    return read_text(env.s3, env.analysis, prefix(env, timestamp, group) + "logs/certificate.txt") or ""


def submit(env, name: str, document: dict, group: str = GROUP) -> str:
    key = f"{group}/submissions/{name}.json"
    put_json(env.s3, env.analysis, key, document)
    return key


@pytest.fixture(scope="module")
def data(env, tmp_path_factory):
    """Inputs and configs of both groups, and every submission of this module at once."""
    import analyses

    directory = tmp_path_factory.mktemp("submission-data")
    s3, bucket = env.s3, env.analysis
    s3.put_object(Bucket=bucket, Key=f"{GROUP}/inputs/good.csv", Body=b"x,y,label\n1,2.5,a\n2,3.5,b\n3,,a\n")
    s3.put_object(Bucket=bucket, Key=f"{GROUP}/inputs/broken.csv", Body=b"")
    put_json(s3, bucket, f"{GROUP}/inputs/records.json", [{"v": 1}, {"v": 4}, {"v": 10}])
    put_json(s3, bucket, f"{GROUP}/configs/describe.json", {"analysis": "describe", "duration_hours": 0.01})
    put_json(s3, bucket, f"{GROUP}/configs/unknown.json", {"analysis": "telepathy"})
    put_json(
        s3,
        bucket,
        f"{GROUP}/configs/cells.json",
        {
            "analysis": "single-cell",
            "params": {"min_genes": 10, "n_top_genes": 150, "n_pcs": 15, "n_marker_genes": 3},
        },
    )
    s3.put_object(Bucket=bucket, Key=f"{OTHER}/inputs/secret.csv", Body=b"secret\n42\n")
    put_json(s3, bucket, f"{OTHER}/configs/describe.json", {"analysis": "describe"})
    cells = directory / "cells.h5ad"
    analyses.synthetic_anndata(300, 200, seed=5).write_h5ad(cells)
    s3.upload_file(str(cells), bucket, f"{GROUP}/inputs/cells.h5ad")

    csv, cfg = f"{GROUP}/inputs/good.csv", f"{GROUP}/configs/describe.json"
    # Every refusal rule is unit-tested (tests/unit/test_submission_validation.py, with Hypothesis);
    # here one of each kind runs through the whole path.
    refusals = {
        "cross-group": (
            {"dataname": f"{OTHER}/inputs/secret.csv", "configname": cfg},
            "belongs to group 'lab-other'",
        ),
        "cross-config": (
            {"dataname": csv, "configname": f"{OTHER}/configs/describe.json"},
            "belongs to group 'lab-other'",
        ),
        "traversal": (
            {"dataname": f"{GROUP}/inputs/../../{OTHER}/inputs/secret.csv", "configname": cfg},
            "contains '..'",
        ),
        "missing-data": ({"dataname": f"{GROUP}/inputs/nope.csv", "configname": cfg}, "does not exist"),
        "unknown-analysis": (
            {"dataname": csv, "configname": f"{GROUP}/configs/unknown.json"},
            "'telepathy' is not registered",
        ),
    }
    before = {
        **listing(s3, bucket, f"{OTHER}/"),
        **listing(s3, bucket, f"{GROUP}/inputs/"),
        **listing(s3, bucket, f"{GROUP}/configs/"),
    }
    for name, (document, _) in refusals.items():
        submit(env, name, {**document, "timestamp": f"refused-{name}"})
    # Not even JSON, and a timestamp that is not a safe path segment: refusal folders of their own.
    env.s3.put_object(Bucket=bucket, Key=f"{GROUP}/submissions/garbled.json", Body=b"{ not json")
    submit(env, "unsafe-timestamp", {"dataname": csv, "configname": cfg, "timestamp": "../../escape"})
    submit(
        env,
        "fan-out",
        {
            "dataname": [csv, f"{GROUP}/inputs/broken.csv", f"{GROUP}/inputs/records.json"],
            "configname": cfg,
            "timestamp": "fan-out",
        },
    )
    submit(
        env,
        "cells",
        {
            "dataname": f"{GROUP}/inputs/cells.h5ad",
            "configname": f"{GROUP}/configs/cells.json",
            "timestamp": "cells",
        },
    )
    return {"refusals": refusals, "before": before, "directory": directory}


def test_cli_upload_then_watch_until_end(env, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    config = tmp_path / "summary.json"
    config.write_text(json.dumps({"analysis": "describe", "params": {"include": "number"}}))
    uploaded = cli("upload", GROUP, str(table), str(config), "--timestamp", "via-cli")
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.strip() == f"s3://{env.analysis}/{prefix(env, 'via-cli')}"
    watched = cli("watch", uploaded.stdout.strip(), "--timeout", "90")
    assert watched.returncode == 0, watched.stderr + watched.stdout
    for words in (
        "[Job Manager] STEP 2/4 (Validation): DONE",
        "Projected total costs",
        "analysis 1 (table.csv): SUCCESS",
        "DATANAME: lab-sub/inputs/table.csv | STATUS: SUCCESS",
        "end.txt: COMPLETED",
    ):
        assert words in watched.stdout
    summary = json.loads(
        read_text(env.s3, env.analysis, prefix(env, "via-cli") + "process_results/table_summary.json")
    )
    assert summary["rows"] == 2 and summary["describe"]["b"]["mean"] == 3.0
    again = cli("upload", GROUP, str(table), str(config), "--timestamp", "via-cli")
    assert again.returncode == 2 and "already used" in again.stderr


def test_status_files_and_end_written_last(env):
    assert end_of(env, "via-cli").startswith("COMPLETED")
    objects = env.s3.list_objects_v2(Bucket=env.analysis, Prefix=prefix(env, "via-cli"))["Contents"]
    end = next(o for o in objects if o["Key"].endswith("process_results/end.txt"))
    assert all(o["LastModified"] <= end["LastModified"] for o in objects)
    status = json.loads(
        read_text(env.s3, env.analysis, prefix(env, "via-cli") + "logs/DATASET_NAME:table.csv_STATUS.txt")
    )
    assert status["status"] == "SUCCESS" and status["analysis"] == "describe" and "done" in status["reason"]
    assert status["input"] == f"{GROUP}/inputs/table.csv"
    assert status["job_start"] <= status["job_finish"] and status["job_finish"].endswith("Z")
    # The group's budget is charged what the run measured, not the estimate admitted up front.
    from flows.submissions.quotas import ledger_key

    ledger = json.loads(read_text(env.s3, env.stack["buckets"]["data"], ledger_key(GROUP)))
    [entry] = [e for job, e in ledger["jobs"].items() if "job__" in job and "via-cli" in job]
    assert 0 < entry["cost"] < entry["estimate"] and entry["settled_at"], entry
    text = certificate(env, "via-cli")
    assert "Measured cost: $" in text and "time limit: 3 minutes (the analysis' default)" in text


def test_fan_out_with_one_failing_dataset_is_partial(env, data):
    end = end_of(env, "fan-out")
    assert end.startswith("PARTIAL") and "2 of 3 dataset(s) succeeded" in end and "broken.csv" in end
    text = certificate(env, "fan-out")
    assert (
        "(good.csv): SUCCESS" in text and "(records.json): SUCCESS" in text and "(broken.csv): FAILED" in text
    )
    broken = json.loads(
        read_text(env.s3, env.analysis, prefix(env, "fan-out") + "logs/DATASET_NAME:broken.csv_STATUS.txt")
    )
    assert broken["status"] == "FAILED" and "cannot read broken.csv" in broken["stderr"]["0"]
    records = json.loads(
        read_text(env.s3, env.analysis, prefix(env, "fan-out") + "process_results/records_summary.json")
    )
    assert records["describe"]["v"]["max"] == 10.0
    run = final_run_for_key(f"{GROUP}/submissions/fan-out.json")
    assert run.state.name == "Partially completed"
    assert "group:lab-sub" in run.tags


def _execution_tables(flow_run_id: str) -> dict[str, dict]:
    """The execution tables (metrics) on a flow run: artifact key → {field: value}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tables = {}
    for artifact in artifacts:
        if artifact.type == "table" and (artifact.key or "").endswith("-execution"):
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            tables[artifact.key] = {row["field"]: row["value"] for row in rows}
    return tables


def test_each_dataset_is_a_job_with_its_execution_on_the_submission_run(env, data):
    from _stack import cli_json, run_cli

    end_of(env, "fan-out")
    run = final_run_for_key(f"{GROUP}/submissions/fan-out.json")
    text = certificate(env, "fan-out")
    jobs = {}
    for name, state in (("good.csv", "SUCCEEDED"), ("records.json", "SUCCEEDED"), ("broken.csv", "FAILED")):
        status_file = prefix(env, "fan-out") + f"logs/DATASET_NAME:{name}_STATUS.txt"
        job_id = json.loads(read_text(env.s3, env.analysis, status_file))["job_id"]  # where the user looks
        assert f"is job {job_id} (interlinked status {job_id})" in text
        job = cli_json("jobs", "show", job_id)
        assert job["jobType"] == "submission-dataset" and job["state"] == state, json.dumps(job, indent=2)
        assert job["flowRunId"] == str(run.id) and job["group"] == GROUP
        assert job["inputData"]["dataset"] == f"{GROUP}/inputs/{name}"
        assert job["inputData"]["statusFile"] == f"s3://{env.analysis}/{status_file}"
        [execution] = job["executions"]
        assert execution["flowRunId"] == str(run.id) and execution["infrastructureId"].startswith("process:")
        jobs[name] = job
    good = jobs["good.csv"]["currentExecution"]
    assert good["state"] == "SUCCESS" and good["progress"] == 1.0 and good["metrics"]["outputs"] >= 1
    assert {"step", "cpu", "memory"} <= set(good["metrics"])
    assert all(uri.startswith(f"s3://{env.analysis}/") for uri in jobs["good.csv"]["outputFiles"]["outputs"])
    broken = jobs["broken.csv"]["currentExecution"]
    assert broken["state"] == "FAILURE" and broken["failureCode"] == "CODE_ERROR"
    assert "cannot read broken.csv" in broken["failureReason"]

    # `interlinked status JOB_ID` shows the dataset's job and its execution.
    status = cli_json("status", jobs["broken.csv"]["id"])
    assert status["job_type"] == "submission-dataset" and status["state"] == "FAILED"
    assert [e["state"] for e in status["executions"]] == ["FAILURE"]
    assert "cannot read broken.csv" in status["error"] and status["flow_run_id"] == str(run.id)
    shown = run_cli("status", jobs["good.csv"]["id"])
    assert shown.returncode == 0 and "SUCCEEDED" in shown.stdout and "submission-dataset" in shown.stdout

    # The Prefect UI: each dataset's execution table on the submission's run, as it ended.
    tables = wait_until(
        lambda: (
            (found := _execution_tables(str(run.id)))
            and all(f"job-{job['id']}-execution" in found for job in jobs.values())
            and found
        ),
        timeout=30,
        what="the execution tables of the datasets",
    )
    assert tables[f"job-{jobs['broken.csv']['id']}-execution"]["state"] == "FAILURE"
    assert tables[f"job-{jobs['good.csv']['id']}-execution"]["state"] == "SUCCESS"


def test_single_cell_analysis_writes_plot_and_tables(env, data):
    end = end_of(env, "cells", timeout=150)
    assert end.startswith("COMPLETED"), certificate(env, "cells")
    base = prefix(env, "cells") + "process_results/cells_"
    png = env.s3.get_object(Bucket=env.analysis, Key=base + "embedding.png")["Body"].read()
    assert png.startswith(b"\x89PNG")
    summary = json.loads(read_text(env.s3, env.analysis, base + "summary.json"))
    assert summary["n_clusters"] >= 2 and summary["qc"]["cells_after"] == summary["cells"]
    clusters = read_text(env.s3, env.analysis, base + "clusters.csv").splitlines()
    assert clusters[0].startswith("cell,cluster,umap_1,umap_2") and len(clusters) == summary["cells"] + 1
    assert read_text(env.s3, env.analysis, base + "markers.csv").startswith("cluster,rank,gene")


def test_refusals_say_why_and_touch_nothing_else(env, data):
    for name, (_, words) in data["refusals"].items():
        timestamp = f"refused-{name}"
        end = end_of(env, timestamp)
        assert end.startswith("REFUSED") and words in end, (name, end)
        text = certificate(env, timestamp)
        assert "): REFUSED. " in text and words in text, (name, text)
        assert not listing(env.s3, env.analysis, prefix(env, timestamp) + "process_results/").keys() - {
            prefix(env, timestamp) + "process_results/end.txt"
        }
        run = final_run_for_key(f"{GROUP}/submissions/{name}.json")
        assert run.state.name == "Refused" and words in run.state.message
    after = {
        **listing(env.s3, env.analysis, f"{OTHER}/"),
        **listing(env.s3, env.analysis, f"{GROUP}/inputs/"),
        **listing(env.s3, env.analysis, f"{GROUP}/configs/"),
    }

    # The CLI test uploads table.csv and summary.json (before or after `before` was taken).
    def unchanged(listing_: dict) -> dict:
        return {k: v for k, v in listing_.items() if "table.csv" not in k and "summary.json" not in k}

    assert unchanged(after) == unchanged(data["before"])
    assert not listing(env.s3, env.analysis, f"{OTHER}/results/")


def test_refusals_without_a_usable_timestamp_get_their_own_folder(env, data):
    deadline = time.monotonic() + 60
    folders: dict[str, str] = {}
    while time.monotonic() < deadline and len(folders) < 2:
        for key in listing(env.s3, env.analysis, f"{GROUP}/results/"):
            if key.endswith("process_results/end.txt") and "__refused-" in key:
                folders[key] = read_text(env.s3, env.analysis, key)
        time.sleep(0.5)
    texts = "\n".join(folders.values())
    assert "not valid JSON" in texts and "'../../escape' is not a safe path segment" in texts
    assert any(f"job__{env.analysis}_garbled__refused-" in key for key in folders)
    assert not listing(env.s3, env.analysis, f"{GROUP}/escape")


def test_a_reused_timestamp_re_runs_there_and_keeps_the_first_jobs_files(env, data):
    """NeuroCAAS's website always uploads ``submissions/submit.json``: a new upload with the timestamp
    of a finished job re-runs in the same folder (where clients poll); the earlier files move to
    ``{group}/results/superseded/``."""
    first_end = end_of(env, "fan-out")
    first = listing(env.s3, env.analysis, prefix(env, "fan-out"))
    assert prefix(env, "fan-out") + "process_results/good_summary.json" in first
    key = submit(
        env,
        "fan-out-again",
        {
            "dataname": f"{GROUP}/inputs/records.json",
            "configname": f"{GROUP}/configs/describe.json",
            "timestamp": "fan-out",
        },
    )
    end = wait_until(
        lambda: (
            (read_text(env.s3, env.analysis, prefix(env, "fan-out") + "process_results/end.txt") or "")
            if "1 of 1"
            in (read_text(env.s3, env.analysis, prefix(env, "fan-out") + "process_results/end.txt") or "")
            else None
        ),
        what="the re-run's end.txt",
    )
    assert end.startswith("COMPLETED") and end != first_end
    assert final_run_for_key(key).state.is_completed()
    now = listing(env.s3, env.analysis, prefix(env, "fan-out"))
    assert prefix(env, "fan-out") + "process_results/good_summary.json" not in now
    assert prefix(env, "fan-out") + "process_results/records_summary.json" in now
    archived = listing(env.s3, env.analysis, f"{GROUP}/results/superseded/job__{env.analysis}_fan-out/")
    assert any(k.endswith("process_results/good_summary.json") for k in archived)
    assert any(k.endswith("process_results/end.txt") for k in archived)
    assert "fan-out-again.json" in read_text(
        env.s3, env.analysis, prefix(env, "fan-out") + "logs/submission.json"
    )


def test_group_quotas_queue_over_concurrency_and_refuse_over_budget(env, data):
    from prefect.variables import Variable

    from flows.submissions.quotas import job_slot

    Variable.set(
        "submission-quotas",
        {"groups": {"lab-poor": {"budget": 0.001}, "lab-busy": {"max_concurrent_jobs": 1}}},
        overwrite=True,
    )
    for group in ("lab-poor", "lab-busy"):
        env.s3.put_object(Bucket=env.analysis, Key=f"{group}/inputs/t.csv", Body=b"a\n1\n")
        put_json(
            env.s3, env.analysis, f"{group}/configs/c.json", {"analysis": "describe", "duration_hours": 0.01}
        )
    put_json(env.s3, env.analysis, "lab-poor/configs/c.json", {"analysis": "describe", "duration_hours": 1})
    try:
        submit(
            env,
            "poor",
            {"dataname": "lab-poor/inputs/t.csv", "configname": "lab-poor/configs/c.json", "timestamp": "t"},
            group="lab-poor",
        )
        with job_slot("lab-busy", 1):  # someone else's job holds the group's only slot
            submit(
                env,
                "busy",
                {
                    "dataname": "lab-busy/inputs/t.csv",
                    "configname": "lab-busy/configs/c.json",
                    "timestamp": "t",
                },
                group="lab-busy",
            )
            # The submission waits its turn, says so, and does not end while the slot is taken.
            deadline = time.monotonic() + 90
            while "waiting: 1 of 1 slots of lab-busy in use" not in certificate(env, "t", group="lab-busy"):
                assert time.monotonic() < deadline, certificate(env, "t", group="lab-busy")
                time.sleep(0.5)
            assert (
                read_text(env.s3, env.analysis, prefix(env, "t", "lab-busy") + "process_results/end.txt")
                is None
            )
        busy = end_of(env, "t", group="lab-busy")
        poor = end_of(env, "t", group="lab-poor")
    finally:
        Variable.unset("submission-quotas")
    assert busy.startswith("COMPLETED"), busy
    assert "a slot of lab-busy is free" in certificate(env, "t", group="lab-busy")
    assert poor.startswith("REFUSED") and "exceeds the remaining budget of group 'lab-poor'" in poor
    assert "estimate: 1 h x 1 dataset(s) x 1 per hour" in certificate(env, "t", group="lab-poor")


def test_submissions_over_the_quota_all_run_never_more_than_the_quota_at_once(env, data):
    """Four submissions of one group at once with a quota of 2: all four run, at most 2 at a time
    (observed from the datasets' own start/end times), none refused."""
    from prefect.variables import Variable

    from flows.submissions.quotas import job_slot

    group = "lab-queue"
    Variable.set("submission-quotas", {"groups": {group: {"max_concurrent_jobs": 2}}}, overwrite=True)
    env.s3.put_object(Bucket=env.analysis, Key=f"{group}/inputs/t.csv", Body=b"a,b\n1,2\n3,4\n")
    put_json(
        env.s3,
        env.analysis,
        f"{group}/configs/c.json",
        {"analysis": "describe", "duration_hours": 0.001},
    )
    stamps = [f"q{index}" for index in range(4)]
    try:
        # Both slots are taken while the four arrive, so every one of them must queue.
        with job_slot(group, 2), job_slot(group, 2):
            for stamp in stamps:
                submit(
                    env,
                    stamp,
                    {
                        "dataname": f"{group}/inputs/t.csv",
                        "configname": f"{group}/configs/c.json",
                        "timestamp": stamp,
                    },
                    group=group,
                )
            deadline = time.monotonic() + 120
            while not all(
                "waiting: 2 of 2 slots" in certificate(env, stamp, group=group) for stamp in stamps
            ):
                assert time.monotonic() < deadline, [certificate(env, stamp, group=group) for stamp in stamps]
                time.sleep(0.5)
        ends = [end_of(env, stamp, group=group, timeout=240) for stamp in stamps]
    finally:
        Variable.unset("submission-quotas")
    assert all(end.startswith("COMPLETED") for end in ends), ends
    intervals = []
    for stamp in stamps:
        status = json.loads(
            read_text(env.s3, env.analysis, prefix(env, stamp, group) + "logs/DATASET_NAME:t.csv_STATUS.txt")
        )
        intervals.append((status["job_start"], status["job_finish"]))
    # Second resolution, truncated: a job that started after another freed its slot never counts
    # as overlapping it, so more than 2 here means more than 2 slots were held at once.
    for start, _ in intervals:
        running = sum(1 for other_start, other_end in intervals if other_start <= start < other_end)
        assert running <= 2, intervals


# ---- real NeuroCAAS submit files and configs, read back the way NeuroCAAS's client reads ------------

NEUROCAAS = ROOT / "tests" / "fixtures" / "neurocaas"
TRAVIS = "traviscipermagroup"  # the group of the seed README and of its example submit file


def client_wait(env, timestamp: str, group: str = TRAVIS, *, timeout: float = 120) -> list[str]:
    """NeuroCAASJob.run (cellistigs/neurocaas_interface, jobtools.py): list the prefix
    ``{group}/results/job__{bucket}_{timestamp}`` until a key holds 'certificate.txt' (started),
    then until one holds 'end.txt' (finished); return the keys."""
    resultsprefix = results_path_of_client(group, env.analysis, timestamp)

    def keys() -> list[str]:
        reply = env.s3.list_objects_v2(Bucket=env.analysis, Prefix=resultsprefix)
        return [item["Key"] for item in reply.get("Contents", [])]

    wait_until(lambda: any("certificate.txt" in k for k in keys()), timeout=timeout, what="certificate.txt")
    return wait_until(
        lambda: keys() if any("end.txt" in k for k in keys()) else None, timeout=timeout, what="end.txt"
    )


@pytest.fixture(scope="module")
def neurocaas(env):
    """The seed README's stack, as a NeuroCAAS user fills it: data, free-form configs (JSON and
    YAML, one under inputs/), then real submit files."""
    s3, bucket = env.s3, env.analysis
    put_json(s3, bucket, f"{TRAVIS}/inputs/dataset1.json", [{"x": 1, "y": 2.0}, {"x": 5, "y": 4.0}])
    s3.put_object(Bucket=bucket, Key=f"{TRAVIS}/inputs/Trial     3.csv", Body=b"t,v\n1,10\n2,30\n")
    # A real NeuroCAAS config has no "analysis" key: free-form parameters and reserved keys.
    put_json(s3, bucket, f"{TRAVIS}/configs/config_None_None.json", {"__duration__": 5, "seed": None})
    s3.put_object(
        Bucket=bucket,
        Key=f"{TRAVIS}/configs/config.yaml",
        Body=(NEUROCAAS / "test1config.yaml").read_bytes() + b"include: number\n__duration__: 5\n",
    )
    s3.put_object(
        Bucket=bucket,
        Key=f"{TRAVIS}/inputs/params.yaml",
        Body=b"ensemble_size: 2\nmode: train\n__duration__: 5\n__dataset_size__: 0.001\nmaxrank: 4\n",
    )
    # The interface client's example submit file, as it uploads it ({group}/submissions/{ts}submit.json).
    example = NEUROCAAS / "condition_test_interface_submit.json"
    s3.put_object(
        Bucket=bucket,
        Key=f"{TRAVIS}/submissions/00:00:00.000001test_intersubmit.json",
        Body=example.read_bytes(),
    )
    spaced = json.loads((NEUROCAAS / "instance_type_submit.json").read_text())
    put_json(s3, bucket, f"{TRAVIS}/submissions/spaced_submit.json", spaced)
    put_json(
        s3,
        bucket,
        f"{TRAVIS}/submissions/bypass_submit.json",
        {
            "dataname": f"{TRAVIS}/inputs/dataset1.json",
            "configname": f"{TRAVIS}/configs/config_None_None.json",
            "timestamp": "bypass",
            "resultpath": "s3://outputbucket/sep_results",
        },
    )
    s3.create_bucket(Bucket="interlinked-bypass-test")
    put_json(
        s3,
        bucket,
        f"{TRAVIS}/submissions/bypass_allowed_submit.json",
        {
            "dataname": f"{TRAVIS}/inputs/dataset1.json",
            "configname": f"{TRAVIS}/configs/config_None_None.json",
            "timestamp": "allowed-bypass",
            "resultpath": "s3://interlinked-bypass-test/lab-out/run1",
        },
    )
    return spaced


def test_the_seed_example_submit_completes_and_reads_back_as_the_client_reads(env, neurocaas):
    from neurocaas_client import download_by_basename, get_instances, parse_certificate, read_status

    timestamp = "00:00:00.000001test_inter"
    keys = client_wait(env, timestamp)
    job = results_path_of_client(TRAVIS, env.analysis, timestamp)
    end = read_text(env.s3, env.analysis, f"{job}/process_results/end.txt")
    certificate = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt")
    assert end.startswith("COMPLETED"), certificate
    rows = parse_certificate(certificate)
    assert rows[f"{TRAVIS}/inputs/dataset1.json"]["STATUS"] == "SUCCESS"
    [(number, instance)] = get_instances(certificate).items()
    assert number == 1 and instance["dataset"] == "dataset1.json" and instance["id"].startswith("i-")
    assert "submit field 'exitcode' (set by the NeuroCAAS client) noted" in certificate
    assert "analysis 'describe': the only analysis reading these datasets" in certificate
    assert (
        "parameter __duration__ given: 5" in certificate
        and "config keys not read by 'describe': seed" in certificate
    )
    status = read_status(
        read_text(env.s3, env.analysis, f"{job}/logs/DATASET_NAME:dataset1.json_STATUS.txt"), live=True
    )
    assert status["status"] == "SUCCESS" and status["instance"] == instance["id"]
    saved = download_by_basename(keys, job)
    assert {"config_None_None.json", "dataset1_summary.json", "dataset1_describe.csv", "end.txt"} <= set(
        saved
    )
    summary = json.loads(read_text(env.s3, env.analysis, saved["dataset1_summary.json"]))
    assert summary["describe"]["x"]["max"] == 5.0
    # The contrib monitor's usage log of the run (price x duration).
    usage = json.loads(read_text(env.s3, env.analysis, f"logs/{TRAVIS}/{instance['id']}.json"))
    assert usage["jobpath"] == job and usage["start"] and usage["end"]


def test_a_spaced_timestamp_instance_type_yaml_config_under_inputs_and_an_ensemble(env, neurocaas):
    from neurocaas_client import download_by_basename, get_instances, parse_certificate, read_status

    timestamp = neurocaas["timestamp"]
    assert " " in timestamp
    keys = client_wait(env, timestamp)
    job = results_path_of_client(TRAVIS, env.analysis, timestamp)
    certificate = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt")
    assert read_text(env.s3, env.analysis, f"{job}/process_results/end.txt").startswith("COMPLETED"), (
        certificate
    )
    assert "Using instance type p3.2xlarge (8 vCPU" in certificate
    assert "parameter ensemble_size given: 2 (jobnb 1..2, mode train)" in certificate
    assert len(get_instances(certificate)) == 2 and len(parse_certificate(certificate)) == 1
    for n in (1, 2):
        status = read_status(
            read_text(env.s3, env.analysis, f"{job}/logs/DATASET_NAME:dataset1.json_inst{n}_STATUS.txt"),
            live=True,
        )
        assert status["status"] == "SUCCESS" and status["jobnb"] == n
    saved = download_by_basename(keys, job)
    assert {"params.yaml", "dataset1_inst1_summary.json", "dataset1_inst2_summary.json"} <= set(saved)
    per_run = json.loads(
        read_text(env.s3, env.analysis, saved[f"job__{env.analysis}_{timestamp}inst2config.json"])
    )
    assert per_run["jobnb"] == 2 and per_run["ensemble_size"] == 2


def test_resultpath_is_refused_with_a_clear_reason_where_the_client_looks(env, neurocaas):
    client_wait(env, "bypass")
    job = results_path_of_client(TRAVIS, env.analysis, "bypass")
    end = read_text(env.s3, env.analysis, f"{job}/process_results/end.txt")
    assert end.startswith("REFUSED") and "storage bypass" in end
    certificate = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt")
    assert "[Job Manager] STEP 1/4 (Initialization): REFUSED. resultpath" in certificate


def test_resultpath_to_an_allowed_bucket_writes_the_results_there(env, neurocaas):
    """Storage bypass (INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED, set for the test stack): the
    outputs and the config copy go under the resultpath, named after the job folder; the
    certificate, status files and end.txt stay where clients look."""
    client_wait(env, "allowed-bypass")
    job = results_path_of_client(TRAVIS, env.analysis, "allowed-bypass")
    end = read_text(env.s3, env.analysis, f"{job}/process_results/end.txt")
    certificate = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt")
    assert end.startswith("COMPLETED"), certificate
    target = f"lab-out/run1/{job.rstrip('/').rsplit('/', 1)[-1]}/process_results/"
    assert f"storage bypass: results go to s3://interlinked-bypass-test/{target}" in certificate
    written = listing(env.s3, "interlinked-bypass-test", target)
    assert f"{target}config_None_None.json" in written and len(written) >= 2, written
    assert set(listing(env.s3, env.analysis, f"{job}/process_results/")) == {f"{job}/process_results/end.txt"}
    [status_key] = [k for k in listing(env.s3, env.analysis, f"{job}/logs/") if k.endswith("_STATUS.txt")]
    outputs = json.loads(read_text(env.s3, env.analysis, status_key))["outputs"]
    assert outputs and all(o.startswith(f"s3://interlinked-bypass-test/{target}") for o in outputs)


def test_the_website_re_uploads_submit_json_and_the_client_sees_the_new_job(env, neurocaas):
    """The website's submit (list dataname, numeric timestamp, always submissions/submit.json) with
    a YAML config: uploaded twice with the same timestamp, the second job is the one clients see."""
    from neurocaas_client import parse_certificate

    website = json.loads((NEUROCAAS / "website_submit.json").read_text())
    key = f"{TRAVIS}/submissions/submit.json"
    put_json(env.s3, env.analysis, key, website)
    client_wait(env, website["timestamp"])
    job = results_path_of_client(TRAVIS, env.analysis, website["timestamp"])
    certificate = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt")
    assert read_text(env.s3, env.analysis, f"{job}/process_results/end.txt").startswith("COMPLETED"), (
        certificate
    )
    assert len(parse_certificate(certificate)) == 2
    assert read_text(env.s3, env.analysis, f"{job}/logs/DATASET_NAME:Trial     3.csv_STATUS.txt")
    assert read_text(env.s3, env.analysis, f"{job}/process_results/Trial     3_describe.csv")
    assert "config keys not read by 'describe': coordinates, nests" in certificate

    put_json(env.s3, env.analysis, key, {**website, "dataname": [f"{TRAVIS}/inputs/Trial     3.csv"]})

    def rerun_ended():
        text = read_text(env.s3, env.analysis, f"{job}/logs/certificate.txt") or ""
        done = read_text(env.s3, env.analysis, f"{job}/process_results/end.txt")
        return text if done and len(parse_certificate(text)) == 1 else None

    certificate = wait_until(rerun_ended, what="the re-upload's job")
    assert "dataset1.json" not in certificate.split("JOB MANAGER SETUP LOG:")[0]
    assert not listing(env.s3, env.analysis, f"{job}/process_results/dataset1_")
    assert listing(
        env.s3, env.analysis, f"{TRAVIS}/results/superseded/job__{env.analysis}_{website['timestamp']}/"
    )

"""`interlinked demo` section: work started by events — S3 submissions and script jobs by S3 drop / SNS.

Everything goes through the real event path: an upload (or a publish) → S3/SNS → the events queue →
the event bridge → a flow run → results in S3. Needs the stack's bridge running (``interlinked up``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from interlinked.demo.rows import Row, say
from interlinked.settings import Settings


def _wait_text(store, key: str, timeout: float) -> str | None:
    """The object's text once it exists (``None`` if it does not appear within ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = store.read_text(key, default=None)
        if text is not None:
            return text
        time.sleep(0.5)
    return None


def section(settings: Settings, stack: dict) -> list[Row]:
    """Submissions (describe, single-cell, a partial fan-out, a refusal) and script jobs by event.

    ``up`` wired the event sources (S3 notifications and the job-requests topic) to the events queue.
    """
    import analyses
    from blocks import ObjectStore, aws_client
    from flows.submissions.client import upload_submission
    from interlinked.bridge.core import derived_id

    bucket = stack["buckets"]["analysis"]
    analysis = ObjectStore(bucket)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="interlinked-demo-events-"))
    (work / "measurements.csv").write_text(
        "sample,condition,value,weight\n"
        + "".join(f"s{i},{'ab'[i % 2]},{i * 1.5:.1f},{(i * 7) % 11}\n" for i in range(40))
    )
    (work / "broken.csv").write_text("")
    (work / "describe.json").write_text(json.dumps({"analysis": "describe", "duration_hours": 0.05}))
    (work / "single-cell.json").write_text(
        json.dumps({"analysis": "single-cell", "params": {"min_genes": 20, "n_top_genes": 300, "n_pcs": 20}})
    )
    analyses.synthetic_anndata(800, 400, seed=11).write_h5ad(work / "pbmc-synthetic.h5ad")

    group = "demo-lab"
    jobs = [
        (
            "submission: table summary",
            "describe",
            [work / "measurements.csv"],
            work / "describe.json",
            "COMPLETED",
        ),
        (
            "submission: single-cell clusters",
            "single-cell",
            [work / "pbmc-synthetic.h5ad"],
            work / "single-cell.json",
            "COMPLETED",
        ),
        (
            "submission: fan-out, one bad file",
            "describe",
            [work / "measurements.csv", work / "broken.csv"],
            work / "describe.json",
            "PARTIAL",
        ),
    ]
    started: list[tuple[str, str, str, str, float]] = []
    for index, (title, kind, data, config, expected) in enumerate(jobs):
        uploaded = upload_submission(
            group, [str(path) for path in data], str(config), timestamp=f"demo-{stamp}-{index}", bucket=bucket
        )
        started.append((title, f"submission ({kind})", expected, uploaded.results_path, time.monotonic()))
        say(f"  uploaded {title}: {uploaded.results_path}")
    # A submission reaching into another group's inputs: refused, with the reason in certificate.txt.
    refused_timestamp = f"demo-{stamp}-refused"
    analysis.put_json(
        f"{group}/submissions/sneaky-{stamp}.json",
        {
            "dataname": "other-lab/inputs/private.csv",
            "configname": f"{group}/configs/describe.json",
            "timestamp": refused_timestamp,
        },
    )
    refused_path = f"s3://{bucket}/{group}/results/job__{bucket}_{refused_timestamp}/"
    started.append(
        (
            "submission: another group's data",
            "submission (refused)",
            "REFUSED",
            refused_path,
            time.monotonic(),
        )
    )

    # Script jobs by event: a description dropped in S3, and one published to SNS.
    data_bucket = stack["buckets"]["data"]
    data = ObjectStore(data_bucket)
    data.put_text("scripts/demo-events/add.py", "def add(args):\n    return args['a'] + args['b']\n")
    drop_key = f"jobs/incoming/demo-{stamp}.json"
    data.put_json(
        drop_key,
        {
            "func": "add",
            "arguments": {"a": 1, "b": 2},
            "name": "dropped in S3",
            "script": "demo-events/add.py",
        },
    )
    message_id = aws_client("sns").publish(
        TopicArn=stack["topics"]["job_requests"],
        Message=json.dumps(
            {
                "func": "add",
                "arguments": {"a": 40, "b": 2},
                "name": "published to SNS",
                "script": "demo-events/add.py",
            }
        ),
    )["MessageId"]
    say("  dropped a job description in S3 and published one to SNS")

    rows: list[Row] = []
    for title, kind, expected, path, t0 in started:
        prefix = path.split(f"s3://{bucket}/", 1)[1]
        end = _wait_text(analysis, prefix + "process_results/end.txt", timeout=300)
        state = end.splitlines()[0] if end else "TIMEOUT"
        detail = end.splitlines()[1] if end and len(end.splitlines()) > 1 else "no end.txt within 300 s"
        rows.append(
            Row(title, kind, expected, state, time.monotonic() - t0, detail, path + "logs/certificate.txt")
        )

    for title, job_key in (
        ("script job: S3 drop", None),
        ("script job: SNS message", f"script-job-message:msg:{message_id}"),
    ):
        t0 = time.monotonic()
        job_id = derived_id(job_key, "job") if job_key else _job_id_of_drop(drop_key)
        result = _wait_text(data, f"results/{job_id}/result.json", timeout=180) if job_id else None
        rows.append(
            Row(
                title,
                "script job (by event)",
                "COMPLETED",
                "COMPLETED" if result else "TIMEOUT",
                time.monotonic() - t0,
                result or "no result within 180 s",
                f"s3://{data_bucket}/results/{job_id}/result.json",
            )
        )
    return rows


def _job_id_of_drop(key: str, timeout: float = 60) -> str | None:
    """The job id the bridge gave an S3 drop (it depends on the event's identity): from its run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["script-job-submission"])), limit=50
            )
        for run in runs:
            if run.parameters.get("key") == key:
                return run.parameters["job_id"]
        time.sleep(0.5)
    return None

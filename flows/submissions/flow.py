"""S3 submissions (seed 003, NeuroCAAS): ``{group}/submissions/*.json`` → an analysis run per dataset.

Started by the event bridge for every submit file uploaded to the analysis bucket (or by hand:
``prefect deployment run process-submission/local -p bucket=... -p key=...``). Layout, fixed by
the architecture::

    {group}/results/job__{bucket}_{timestamp}/
        logs/certificate.txt                      live, human-readable status of the job
        logs/DATASET_NAME:{file}_STATUS.txt       one JSON status per dataset, updated live
        logs/submission.json                      the claim: which submission owns this folder
        process_results/{file}/...                the analysis outputs of each dataset
        process_results/end.txt                   written last, also on failure or refusal

Order: read the submit file → validate it (pure, before touching any other path) → claim the
results folder (a second submission with the same timestamp is refused and the first job's folder
is left untouched) → check that data and config exist and the config names a registered analysis
→ take a job slot of the group and charge the estimated cost to its budget → analyse the datasets
in parallel (at most the group's ``dataset_concurrency`` at once; one failing dataset does not stop
the others) → ``end.txt``. A refusal still gets its certificate (saying exactly why) and
``end.txt``, and never reads or writes anything outside its own results folder.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Completed, Failed

from blocks.s3 import ObjectMissing, ObjectStore, data_store
from flows.submissions.folder import END, RESULTS, JobFolder, claim_folder, now, take_over_claim
from flows.submissions.quotas import NoSlot, OverBudget, Quota, charge_budget, job_slot, quota_for
from flows.submissions.registry import AnalysisConfig, ConfigRefused, check_inputs, parse_config
from flows.submissions.validation import (
    Dataset,
    Submission,
    SubmissionRefused,
    check_timestamp,
    parse_submission,
    parse_submission_key,
    refusal_prefix,
    results_prefix,
    safe_label,
    status_file_name,
)

FLOW_NAME = "process-submission"
MAX_SUBMISSION_BYTES = 256 * 1024


def _ui_link(flow_run_id: str | None) -> str:
    base = os.environ.get("PREFECT_UI_URL")
    if not flow_run_id:
        return "-"
    return f"{flow_run_id} ({base.rstrip('/')}/runs/flow-run/{flow_run_id})" if base else flow_run_id


@dataclass
class JobContext:
    store: ObjectStore  # the bucket the submission came from
    folder: JobFolder
    submission: Submission
    config: AnalysisConfig
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write_status(self, target: Dataset, **changes: Any) -> dict[str, Any]:
        with self.lock:
            record = self.statuses.setdefault(target.label, {})
            record.update(changes, updated=now())
            snapshot = dict(record)
        self.folder.put_json(f"logs/{status_file_name(target)}", snapshot)
        return snapshot


class DatasetFailed(RuntimeError):
    pass


def _download_dataset(store: ObjectStore, dataset: Dataset, directory: Path) -> Path:
    """The dataset as a local path (a file, or a directory for a 10x matrix folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not dataset.is_directory:
        return store.download(dataset.key, directory / dataset.key.rsplit("/", 1)[-1])
    target = directory / dataset.label
    target.mkdir(parents=True, exist_ok=True)
    found = 0
    for key in store.keys(dataset.key):
        relative = key[len(dataset.key) :]
        if not relative or relative.endswith("/") or "/" in relative:
            continue  # only the folder's own files: a 10x matrix directory is flat
        store.download(key, target / relative)
        found += 1
    if not found:
        raise DatasetFailed(f"the folder {store.uri(dataset.key)} is empty")
    return target


@task(
    name="analyse-dataset",
    task_run_name="analyse {dataset.label}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def analyse_dataset(context: JobContext, dataset: Dataset) -> dict[str, Any]:
    """Download one dataset, run the analysis, upload its outputs; keep its status file current."""
    logger = get_run_logger()
    analysis = context.config.analysis
    folder = context.folder
    started = time.monotonic()
    output_prefix = f"{RESULTS}{dataset.label}/"
    context.write_status(dataset, status="RUNNING", start=now(), progress=0.0, step="download")
    folder.log("DATASET", f"{dataset.label}: RUNNING ({analysis.name})")
    last_progress = [0.0]

    def progress(step: str, fraction: float) -> None:
        moment = time.monotonic()
        if moment - last_progress[0] >= 1.0 or fraction >= 1.0:
            last_progress[0] = moment
            context.write_status(dataset, progress=round(min(1.0, fraction), 3), step=step)

    workdir = Path(tempfile.mkdtemp(prefix="interlinked-submission-"))
    try:
        try:
            path = _download_dataset(context.store, dataset, workdir / "input")
        except ObjectMissing:
            raise DatasetFailed(
                f"cannot read {context.store.uri(dataset.key)}: it no longer exists"
            ) from None
        except ClientError as error:
            raise DatasetFailed(f"cannot read {context.store.uri(dataset.key)}: {error}") from None
        output_dir = workdir / "output"
        output_dir.mkdir()
        try:
            summary = analysis.run(path, context.config.params, output_dir, progress)
        except Exception as error:
            raise DatasetFailed(f"{type(error).__name__}: {error}") from None
        outputs = []
        for item in sorted(output_dir.rglob("*")):
            if item.is_file():
                relative = item.relative_to(output_dir).as_posix()
                context.store.upload(item, folder.prefix + output_prefix + relative)
                outputs.append(output_prefix + relative)
        seconds = round(time.monotonic() - started, 3)
        context.write_status(
            dataset,
            status="SUCCESS",
            reason=None,
            end=now(),
            seconds=seconds,
            progress=1.0,
            step="done",
            outputs=outputs,
            summary=summary,
        )
        folder.log("DATASET", f"{dataset.label}: SUCCESS in {seconds:.1f} s → {output_prefix}")
        logger.info("dataset %s: %d outputs in %.1f s", dataset.label, len(outputs), seconds)
        return {"dataset": dataset.key, "outputs": outputs, "summary": summary}
    except Exception as error:
        reason = str(error) if isinstance(error, DatasetFailed) else f"{type(error).__name__}: {error}"
        context.write_status(
            dataset, status="FAILED", reason=reason, end=now(), seconds=round(time.monotonic() - started, 3)
        )
        folder.log("DATASET", f"{dataset.label}: FAILED — {reason}")
        raise DatasetFailed(f"{dataset.label}: {reason}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_datasets(context: JobContext, limit: int) -> dict[str, str]:
    """Analyse every dataset, at most ``limit`` at a time; return label → final status."""
    finished: queue.Queue = queue.Queue()
    pending = list(context.submission.datasets)
    running = 0
    while pending or running:
        while pending and running < limit:
            dataset = pending.pop(0)
            future = analyse_dataset.submit(context, dataset)
            future.add_done_callback(finished.put)
            running += 1
        finished.get()
        running -= 1
    return {label: record.get("status", "UNKNOWN") for label, record in context.statuses.items()}


def _refuse(folder: JobFolder, reason: str):
    folder.log("REFUSED", reason, status="REFUSED", reason=reason)
    folder.end("REFUSED", reason)
    get_run_logger().warning("submission refused: %s", reason)
    return Failed(name="Refused", message=f"refused: {reason}")


def _read_submission(store: ObjectStore, key: str, version_id: str | None) -> tuple[bytes, dict[str, Any]]:
    reply = store.get(key, version_id=version_id)
    if reply.get("ContentLength", 0) > MAX_SUBMISSION_BYTES:
        return b"", {
            "etag": reply["ETag"].strip('"'),
            "version_id": reply.get("VersionId"),
            "too_large": True,
        }
    return reply["Body"].read(), {"etag": reply["ETag"].strip('"'), "version_id": reply.get("VersionId")}


@flow(
    name=FLOW_NAME,
    description="Validate and run one S3 submission ({group}/submissions/*.json) into {group}/results/job__{bucket}_{timestamp}/.",
    persist_result=False,
)
def process_submission(bucket: str, key: str, etag: str | None = None, version_id: str | None = None):
    logger = get_run_logger()
    store = ObjectStore(bucket)  # the bucket of the event: not necessarily the stack's analysis bucket
    run = get_run_context().flow_run
    flow_run_id = str(run.id) if run else None
    group, name = parse_submission_key(key)  # the bridge routes only such keys; anything else fails here

    try:
        body, identity = _read_submission(store, key, version_id)
    except ObjectMissing:
        logger.warning("s3://%s/%s no longer exists: nothing to do", bucket, key)
        return Completed(name="Skipped", message=f"s3://{bucket}/{key} no longer exists")
    identity = {"submission": f"s3://{bucket}/{key}", "key": key, **identity, "flow_run_id": flow_run_id}
    header = {
        "submission": f"s3://{bucket}/{key} (etag {identity['etag']}, version {identity.get('version_id') or '-'})",
        "group": group,
        "flow run": _ui_link(flow_run_id),
        "received": now(),
    }

    # 1. Enough of the document to know where the certificate goes.
    document: Any = None
    problem: str | None = None
    if identity.get("too_large"):
        problem = f"the submit file is larger than {MAX_SUBMISSION_BYTES} bytes"
    else:
        try:
            document = json.loads(body)
        except ValueError as error:
            problem = f"the submit file is not valid JSON: {error}"
    timestamp = None
    if problem is None and isinstance(document, dict) and "timestamp" in document:
        try:
            timestamp = check_timestamp(document["timestamp"])
        except SubmissionRefused as refused:
            problem = refused.reason
    identity_text = f"{key}@{identity['etag']}:{identity.get('version_id')}"
    if timestamp is None:
        prefix = refusal_prefix(group, bucket, safe_label(name.removesuffix(".json")), identity_text)
    else:
        prefix = results_prefix(group, bucket, timestamp)

    def folder_at(prefix: str) -> JobFolder:
        job = prefix.rstrip("/").rsplit("/", 1)[-1]
        return JobFolder(store, prefix, {"job": job, "results": store.uri(prefix), **header})

    folder = folder_at(prefix)

    # 2. Claim the folder: it belongs to exactly one submission, forever.
    claim = claim_folder(store, prefix, identity)
    if not claim.ours:
        owner = claim.record.get("submission", "another submission")
        reason = (
            f"timestamp {timestamp!r} is already used by {owner} (claimed {claim.record.get('claimed_at')}): "
            f"results folders are immutable, submit again with a new timestamp"
        )
        prefix = refusal_prefix(group, bucket, safe_label(timestamp or name), identity_text)
        folder = folder_at(prefix)
        folder.put_json("logs/submission.json", {**identity, "refused": reason})
        return _refuse(folder, reason)
    if not claim.fresh and claim.record.get("flow_run_id") != flow_run_id:
        duplicate = _duplicate_of(store, prefix, claim.record, flow_run_id)
        if duplicate is not None:
            return duplicate
    logger.info("results folder s3://%s/%s", bucket, prefix)

    try:
        folder.log("RECEIVED", f"submit file {key} ({len(body)} bytes)", status="VALIDATING")
        if problem is not None:
            return _refuse(folder, problem)

        # 3. Validate (pure), then look at the group's own inputs and configs only.
        try:
            submission = parse_submission(bucket, key, document)
        except SubmissionRefused as refused:
            return _refuse(folder, refused.reason)
        refusal = _check_existence(store, submission)
        if refusal:
            return _refuse(folder, refusal)
        try:
            config_document = store.read_json(submission.configname)
        except ValueError as error:
            return _refuse(folder, f"configname {submission.configname!r} is not valid JSON: {error}")
        try:
            config = parse_config(config_document)
            check_inputs(config, [dataset.key for dataset in submission.datasets])
        except ConfigRefused as refused:
            return _refuse(folder, str(refused))
        datasets = len(submission.datasets)
        folder.log(
            "VALIDATED",
            f"{datasets} dataset{'s' if datasets != 1 else ''} ({', '.join(d.label for d in submission.datasets)}); "
            f"config {submission.configname}: analysis {config.analysis.name!r}",
        )
        context = JobContext(store=store, folder=folder, submission=submission, config=config)
        for dataset in submission.datasets:
            context.write_status(
                dataset,
                dataset=dataset.key,
                analysis=config.analysis.name,
                status="PENDING",
                reason=None,
                start=None,
                end=None,
                input=f"s3://{bucket}/{dataset.key}",
                config=f"s3://{bucket}/{submission.configname}",
                outputs_prefix=f"s3://{bucket}/{prefix}{RESULTS}{dataset.label}/",
            )

        # 4. Quotas: a job slot of the group, then the budget.
        quota = quota_for(group)

        def waiting(in_use: int, limit: int) -> None:
            folder.log("WAITING", f"waiting: {in_use} of {limit} slots of {group} in use", status="WAITING")

        try:
            with job_slot(
                group, quota.max_concurrent_jobs, wait_seconds=quota.slot_wait_seconds, on_wait=waiting
            ):
                if folder.status == "WAITING":
                    folder.log("SLOT", f"a slot of {group} is free", status="VALIDATING")
                return _accepted(context, quota, identity)
        except NoSlot as refused:
            return _refuse(folder, str(refused))
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        try:
            folder.log("FAILED", reason, status="FAILED", reason=reason)
            folder.end("FAILED", reason)
        finally:
            logger.error("submission failed: %s", reason)
        raise


def _duplicate_of(store: ObjectStore, prefix: str, record: dict[str, Any], flow_run_id: str | None):
    """The same submission (same object version) reached another run too — e.g. one event delivered
    by two paths. Done or in progress there: nothing to do here. That run ended without end.txt
    (crashed): take over. Returns the state to end with, or None to go on."""
    from prefect.client.orchestration import get_client

    other = record.get("flow_run_id")
    if store.exists(prefix + END):
        return Completed(name="Duplicate", message=f"already processed by flow run {other}")
    active = False
    if other:
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(other).state
            active = state is not None and not state.is_final()
        except Exception:  # unknown run (another server?): treat as gone
            active = False
    if active:
        return Completed(name="Duplicate", message=f"being processed by flow run {other}")
    get_run_logger().warning("flow run %s ended without end.txt; this run takes over", other)
    take_over_claim(store, prefix, record, flow_run_id)
    return None


def _check_existence(store: ObjectStore, submission: Submission) -> str | None:
    for dataset in submission.datasets:
        if dataset.is_directory and not store.prefix_exists(dataset.key):
            return f"dataname {dataset.key!r} does not exist (no objects under it)"
        if not dataset.is_directory and store.head(dataset.key) is None:
            return f"dataname {dataset.key!r} does not exist"
    if store.head(submission.configname) is None:
        return f"configname {submission.configname!r} does not exist"
    return None


def _accepted(context: JobContext, quota: Quota, identity: dict[str, Any]):
    folder, submission, config = context.folder, context.submission, context.config
    datasets = len(submission.datasets)
    cost = config.estimated_cost(datasets=datasets, price_per_hour=quota.price_per_hour)
    try:
        account = charge_budget(
            data_store(),
            group=submission.group,
            job=f"{submission.bucket}/{submission.results_prefix}",
            cost=cost,
            budget=quota.budget,
            detail={"submission": identity["submission"], "flow_run_id": identity.get("flow_run_id")},
        )
    except OverBudget as refused:
        return _refuse(
            folder,
            f"{refused} (estimate: {config.duration_hours:g} h x {datasets} dataset(s) x {quota.price_per_hour:g} per hour)",
        )
    folder.log(
        "ACCEPTED",
        f"estimated cost {cost:g} ({config.duration_hours:g} h x {datasets} x {quota.price_per_hour:g}/h); "
        f"budget left {account['remaining']:g} of {account['budget']:g}",
    )
    limit = min(quota.dataset_concurrency, datasets)
    folder.log("STARTED", f"analysing {datasets} dataset(s), {limit} at a time", status="RUNNING")
    statuses = _run_datasets(context, limit)
    failed = sorted(label for label, status in statuses.items() if status != "SUCCESS")
    succeeded = datasets - len(failed)

    def finish(status: str, summary: str, reason: str | None = None) -> str:
        folder.log("FINISHED", summary, status=status, reason=reason)
        folder.end(status, summary)
        return summary

    if not failed:
        return Completed(message=finish("COMPLETED", f"{succeeded} of {datasets} dataset(s) succeeded"))
    reasons = "; ".join(f"{label}: {context.statuses[label].get('reason')}" for label in failed)
    if succeeded:
        summary = f"{succeeded} of {datasets} dataset(s) succeeded; failed: {reasons}"
        return Completed(
            name="Partially completed", message=finish("PARTIAL", summary, f"failed: {', '.join(failed)}")
        )
    summary = f"every dataset failed: {reasons}"
    return Failed(message=finish("FAILED", summary, summary))

"""S3 submissions (seed 003, NeuroCAAS): ``{group}/submissions/*.json`` → an analysis run per dataset.

Started by the event bridge for every submit file uploaded to an analysis bucket (or by hand:
``prefect deployment run process-submission/local -p bucket=... -p key=...``). Layout, NeuroCAAS's
own (what its interface client, website and CLI docs read)::

    {group}/results/job__{bucket}_{timestamp}/
        logs/certificate.txt                      live: per-run monitoring rows + job manager log
        logs/DATASET_NAME:{basename}_STATUS.txt   one JSON status per run, updated live
        logs/submission.json                      the claim: which upload owns this folder
        process_results/{stem}_{output}           every run's outputs, flat (downloaded by basename)
        process_results/{config file}             a copy of the config
        process_results/end.txt                   written last, also on failure or refusal

Order (NeuroCAAS's four steps, logged as such in the certificate): 1. read the submit file and
claim the results folder; 2. validate (pure checks first, then only the group's own ``inputs/``
and ``configs/``), read the config, choose the analysis and charge the budget; 3. read the
reserved config keys and wait for a job slot of the group; 4. start the runs (in parallel, at
most ``dataset_concurrency``, one failing run does not stop the others) → ``end.txt``.

Each run (one dataset, or one member of an ensemble) is also a job of the job lifecycle
(:mod:`flows.jobs`, type ``submission-dataset``): made when the submission is accepted, DISPATCHED
to this flow run, one execution from the run's start to SUCCESS or FAILURE (a code of
:mod:`flows.jobs.failures`: ``TIME_LIMIT``, ``OUT_OF_MEMORY``, else ``CODE_ERROR``; the status
file's ``failure`` is the reason), with the run's step, CPU and memory as progress metrics and its
outputs as ``outputFiles``. Its id is in the status file (``job_id``, next to NeuroCAAS's fields)
and on a ``[Internal (jobs)]`` line of the certificate, for ``interlinked status JOB_ID``. The job
record is bookkeeping about the run: a job store that cannot be reached is said in the
certificate, and the analyses run all the same.

Credentials: the datasets and the config are read, and the outputs written, with a session of the
submission role limited to the group's ``inputs/`` and ``configs/`` (read) and this job's
``process_results/`` (or its resultpath target) (:mod:`flows.submissions.scoped`); the flow's own
identity writes the platform's records (claim, certificate, status files, ``end.txt``, budget
ledger, job store, usage logs). Without a submission role configured it all runs as the flow.

Re-uploading a submit file with the timestamp of an earlier job re-runs it in the same folder,
as the NeuroCAAS website expects (it always uploads ``submissions/submit.json``): once the earlier
job has ended its files are moved to ``{group}/results/superseded/…`` and the new job starts;
while it still runs the new upload waits for it (up to ``submission_rerun_wait_seconds``, then it
is refused in a ``…__refused-xxxx`` folder of its own).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Completed, Failed

from blocks.s3 import ObjectMissing, ObjectStore, data_store, location_allowed
from flows.jobs.failures import FailureCode, from_exception
from flows.jobs.work import TrackedJob
from flows.submissions.folder import (
    END,
    FAILED,
    IN_PROGRESS,
    INITIALIZING,
    RESULTS,
    SUCCESS,
    Claim,
    JobFolder,
    claim_folder,
    neurocaas_time,
    now,
    supersede,
    take_over_claim,
)
from flows.submissions.quotas import (
    INSTANCE_TYPES,
    NoSlot,
    OverBudget,
    Quota,
    SubmissionSettings,
    analysis_for_bucket,
    charge_budget,
    job_slot,
    quota_for,
    settle_budget,
)
from flows.submissions.registry import (
    AnalysisConfig,
    ConfigRefused,
    check_inputs,
    input_kind,
    parse_config,
    parse_config_text,
)
from flows.submissions.scoped import ScopeError, role_arn, scoped_store, session_policy
from flows.submissions.validation import (
    KNOWN_FIELDS,
    MAX_DATASETS,
    Dataset,
    Submission,
    SubmissionRefused,
    check_timestamp,
    dataset_labels,
    parse_submission,
    parse_submission_key,
    refusal_prefix,
    results_prefix,
    safe_label,
    status_file_name,
)
from flows.submissions.writers import Registry, WriterCheck, check_writer, load_registry

FLOW_NAME = "process-submission"
JOB_TYPE = "submission-dataset"
MAX_SUBMISSION_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
MAX_STD_LINES = 200  # stdout/stderr lines kept in a status file


def _ui_link(flow_run_id: str | None) -> str:
    base = os.environ.get("PREFECT_UI_URL")
    if not flow_run_id:
        return "-"
    return f"{flow_run_id} ({base.rstrip('/')}/runs/flow-run/{flow_run_id})" if base else flow_run_id


def _instance_id(seed: str, index: int) -> str:
    """An EC2-style id (``i-`` + 17 hex) naming one run, stable for a flow run: the NeuroCAAS client
    pairs runs and datasets through ``[Utils] New instance ec2.Instance(id='…') created!`` lines."""
    return "i-" + uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{index}").hex[:17]


_PROCESS: Any = None


def _usage() -> tuple[str, str]:
    """Live ``("12.5 %", "812.3 MB")`` of the process running the analysis (NeuroCAAS's units):
    CPU since the previous reading, resident memory now."""
    global _PROCESS
    import psutil

    if _PROCESS is None or _PROCESS.pid != os.getpid():  # not inherited across a fork
        _PROCESS = psutil.Process()
        _PROCESS.cpu_percent(interval=None)  # the first reading only starts the clock
    return f"{_PROCESS.cpu_percent(interval=None):.1f} %", f"{_PROCESS.memory_info().rss / 1e6:.1f} MB"


@dataclass
class Run:
    """One analysis run (NeuroCAAS: one immutable analysis environment) and its live status."""

    dataset: Dataset
    number: int  # 1-based, as in "Starting analysis n with parameter set …"
    instance: str
    command: str
    record: dict[str, Any] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0  # measured run time (what the budget is charged for)
    job: TrackedJob | None = None  # its job (flows.jobs), kept best-effort


@dataclass
class JobContext:
    store: ObjectStore  # the bucket the submission came from, as the flow (the platform's records)
    folder: JobFolder
    submission: Submission
    config: AnalysisConfig
    instance_type: str
    price_per_hour: float
    runs: dict[str, Run] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ledger_job: str | None = None  # this job's entry in the group's budget ledger
    # Storage bypass (the submit file's resultpath): where process_results/ goes instead.
    result_store: ObjectStore | None = None
    result_prefix: str | None = None
    # The same bucket as the submission's own session (flows.submissions.scoped): its datasets and
    # config are read, its results written with it. None: no submission role, the flow's store.
    scoped: ObjectStore | None = None

    @property
    def data(self) -> ObjectStore:
        """The store the submission's inputs are read and its results written with."""
        return self.scoped or self.store

    def put_result(self, name: str, body: bytes | None = None, *, path: Path | None = None) -> str:
        """Write one result file (from ``path`` or ``body``) where this job's results go; what the
        status file lists for it (``process_results/<name>``, or the full URI under a resultpath)."""
        if self.result_store is None:
            key = self.folder.prefix + RESULTS + name
            store, listed = self.data, RESULTS + name
        else:
            key = self.result_prefix + name
            store, listed = self.result_store, self.result_store.uri(self.result_prefix + name)
        if path is not None:
            store.upload(path, key)
        else:
            kind = "application/json" if name.endswith(".json") else "text/plain; charset=utf-8"
            store.put(key, body or b"", content_type=kind)
        return listed

    def write_status(self, run: Run, *, upload_certificate: bool = True, **changes: Any) -> dict[str, Any]:
        """Update a run's status file (NeuroCAAS's fields) and its row in the certificate."""
        with self.lock:
            run.record.update(changes)
            cpu, memory = (
                _usage()
                if run.record.get("status") == IN_PROGRESS
                else (
                    run.record.get("cpu_usage", "0.0 %"),
                    run.record.get("memory_usage", "0.0 MB"),
                )
            )
            run.record.update(
                cpu_usage=cpu,
                memory_usage=memory,
                reason=list(run.steps[-20:]),
                stdout={str(i): line for i, line in enumerate(run.stdout[-MAX_STD_LINES:])},
                stderr={str(i): line for i, line in enumerate(run.stderr[-MAX_STD_LINES:])},
            )
            snapshot = {
                "instance": run.instance,
                "command": run.command,
                "input": run.dataset.key,
                **{k: run.record.get(k) for k in ("status", "reason", "memory_usage", "cpu_usage")},
                "job_start": run.record.get("job_start", "N/A"),
                "job_finish": run.record.get("job_finish", "N/A"),
                "stdout": run.record["stdout"],
                "stderr": run.record["stderr"],
                # interlinked's own additions (NeuroCAAS readers ignore them)
                **{
                    k: run.record[k]
                    for k in ("analysis", "jobnb", "progress", "outputs", "summary", "job_id")
                    if k in run.record
                },
            }
        self.folder.put_json(f"logs/{status_file_name(run.dataset)}", snapshot)
        last = run.steps[-1] if run.steps else "none"
        self.folder.monitor(
            run.dataset.label,
            run.dataset.key,
            snapshot["status"],
            last,
            snapshot["cpu_usage"],
            upload=upload_certificate,
        )
        return snapshot

    def status_uri(self, run: Run) -> str:
        """Where the run's status file is."""
        return self.store.uri(self.folder.prefix + f"logs/{status_file_name(run.dataset)}")

    def output_uri(self, listed: str) -> str:
        """An output as the status file lists it, as a full S3 URI."""
        return listed if listed.startswith("s3://") else self.store.uri(self.folder.prefix + listed)

    def usage_log(self, run: Run, *, start: str | None, end: str | None) -> None:
        """The run's usage log where NeuroCAAS's cost tools read it (``logs/{group}/{instance}.json``
        in the analysis bucket: neurocaas_contrib's monitor.py sums price x (end - start))."""
        self.store.put_json(
            f"logs/{self.submission.group}/{run.instance}.json",
            {
                "instance-id": run.instance,
                "instance-type": self.instance_type,
                "spot": False,
                "price": self.price_per_hour,
                "databucket": self.submission.bucket,
                "datapath": run.dataset.key,
                "configpath": self.submission.configname,
                "jobpath": self.folder.prefix.rstrip("/"),
                "start": start,
                "end": end,
            },
            indent=2,
        )


class DatasetFailed(RuntimeError):
    """A run failed; ``code`` is its failure code (flows.jobs.failures) for its job."""

    def __init__(self, reason: str, *, code: FailureCode = FailureCode.CODE_ERROR):
        super().__init__(reason)
        self.code = code


def _download_dataset(store: ObjectStore, dataset: Dataset, directory: Path) -> Path:
    """The dataset as a local path (a file, or a directory for a folder dataset)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not dataset.is_directory:
        return store.download(dataset.key, directory / dataset.name)
    target = directory / dataset.name
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


def _flat_name(run: Run, relative: str) -> str:
    """An output's name in the flat ``process_results/``: the run's stem, then the file."""
    return f"{run.dataset.stem}_{relative.replace('/', '_')}"


@task(
    name="analyse-dataset",
    task_run_name="analyse {run.dataset.label}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def analyse_dataset(context: JobContext, run: Run) -> dict[str, Any]:
    """Download one dataset, run the analysis, upload its outputs; keep its status file current."""
    logger = get_run_logger()
    analysis = context.config.analysis
    folder = context.folder
    dataset = run.dataset
    started = time.monotonic()
    start_time = neurocaas_time()
    run.steps.append("download")
    run.stdout.append(f"{now()} downloading {context.store.uri(dataset.key)}")
    job = run.job or TrackedJob(None)
    job.execute()  # EXECUTE: this run's execution, linked to the flow run
    context.write_status(run, status=IN_PROGRESS, job_start=start_time, progress=0.0)
    context.usage_log(run, start=start_time, end=None)
    last_progress = [0.0]

    def progress(step: str, fraction: float) -> None:
        if not run.steps or run.steps[-1] != step:
            run.steps.append(step)
        moment = time.monotonic()
        if moment - last_progress[0] >= 1.0 or fraction >= 1.0:
            last_progress[0] = moment
            run.stdout.append(f"{now()} {step}: {100 * min(1.0, fraction):.0f}%")
            snapshot = context.write_status(run, progress=round(min(1.0, fraction), 3))
            job.progress(min(1.0, fraction), _metrics(step, snapshot))

    workdir = Path(tempfile.mkdtemp(prefix="interlinked-submission-"))
    try:
        try:
            path = _download_dataset(context.data, dataset, workdir / "input")
        except ObjectMissing:
            raise DatasetFailed(
                f"cannot read {context.store.uri(dataset.key)}: it no longer exists"
            ) from None
        except ClientError as error:
            # Without ListBucket on a key, AWS answers a missing object with AccessDenied.
            if not context.store.exists(dataset.key):
                raise DatasetFailed(
                    f"cannot read {context.store.uri(dataset.key)}: it no longer exists"
                ) from None
            raise DatasetFailed(f"cannot read {context.store.uri(dataset.key)}: {error}") from None
        output_dir = workdir / "output"
        output_dir.mkdir()
        run.steps.append(analysis.name)
        run.stdout.append(f"{now()} running {analysis.name} on {dataset.name}")
        try:
            summary = analysis.run(path, context.config.run_params(dataset.jobnb), output_dir, progress)
        except Exception as error:
            code = TIME_LIMIT if isinstance(error, TimeoutError) else from_exception(error).code
            raise DatasetFailed(f"{type(error).__name__}: {error}", code=code) from None
        run.steps.append("upload")
        outputs = []
        for item in sorted(output_dir.rglob("*")):
            if item.is_file():
                name = _flat_name(run, item.relative_to(output_dir).as_posix())
                outputs.append(context.put_result(name, path=item))
        seconds = round(time.monotonic() - started, 3)
        run.steps.append("done")
        run.stdout.append(f"{now()} {len(outputs)} output(s) in {seconds:.1f} s")
        finish = neurocaas_time()
        snapshot = context.write_status(
            run, status=SUCCESS, job_finish=finish, progress=1.0, outputs=outputs, summary=summary
        )
        context.usage_log(run, start=start_time, end=finish)
        job.progress(1.0, {**_metrics("done", snapshot), "outputs": len(outputs), "seconds": seconds})
        job.outputs(
            data={"status": SUCCESS, "summary": summary},
            files={
                "statusFile": context.status_uri(run),
                "outputs": [context.output_uri(o) for o in outputs],
            },
        )
        job.succeed()
        folder.line(
            f"[Internal (monitor)] analysis {run.number} ({dataset.label}): SUCCESS in {seconds:.1f} s, "
            f"{len(outputs)} output(s)",
            internal=True,
        )
        logger.info("dataset %s: %d outputs in %.1f s", dataset.label, len(outputs), seconds)
        return {"dataset": dataset.key, "outputs": outputs, "summary": summary}
    except Exception as error:
        if isinstance(error, DatasetFailed):
            reason, code = str(error), error.code
        elif isinstance(error, TimeoutError):
            reason = f"exceeded its time limit of {time_limit_text(context.config)}"
            code = TIME_LIMIT
        else:
            reason, code = f"{type(error).__name__}: {error}", from_exception(error).code
        run.stderr.append(reason)
        run.steps.append(f"failed: {reason}")
        job.fail(
            reason,
            code=code,
            evidence={"statusFile": context.status_uri(run), "dataset": dataset.key, "steps": run.steps[-5:]},
        )
        finish = neurocaas_time()
        context.write_status(run, status=FAILED, job_finish=finish, failure=reason)
        context.usage_log(run, start=start_time, end=finish)
        folder.line(
            f"[Internal (monitor)] analysis {run.number} ({dataset.label}): FAILED. {reason}", internal=True
        )
        raise DatasetFailed(f"{dataset.label}: {reason}") from None
    finally:
        run.seconds = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)


TIME_LIMIT = FailureCode.TIME_LIMIT


def _metrics(step: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A run's progress metrics for its job: the step, and CPU and memory as the status file has them."""
    return {"step": step, "cpu": snapshot.get("cpu_usage"), "memory": snapshot.get("memory_usage")}


def _start_jobs(context: JobContext, limit: int) -> None:
    """Make each run's job (type ``submission-dataset``, DISPATCHED to this flow run) and name it in
    the status file and the certificate. Its windows follow the run's time limit, so the sweeper
    waits for a dataset queued behind others and never takes a long step for a hung one; one
    attempt (a submission is re-run by uploading it again)."""
    submission, folder = context.submission, context.folder
    limit_seconds = time_limit_seconds(context.config)
    waves = -(-len(context.runs) // max(1, limit))
    estimations = {
        "heartbeatTimeoutSeconds": round(limit_seconds + 300),
        "startTimeoutSeconds": round(waves * limit_seconds + 600),
        "maxAttempts": 1,
    }
    group = submission.group if _taggable(submission.group) else None
    logger = get_run_logger()

    def start(run: Run) -> TrackedJob:
        return TrackedJob.start(
            JOB_TYPE,
            {
                "submission": f"s3://{submission.bucket}/{submission.key}",
                "group": submission.group,
                "analysis": context.config.analysis.name,
                "dataset": run.dataset.key,
                "label": run.dataset.label,
                "jobnb": run.dataset.jobnb,
                "number": run.number,
                "instance": run.instance,
                "results": context.store.uri(folder.prefix),
                "statusFile": context.status_uri(run),
            },
            estimations=estimations,
            group=group,
            warn=logger.warning,
        )

    runs = list(context.runs.values())
    with ThreadPoolExecutor(max_workers=min(8, len(runs)), thread_name_prefix="submission-jobs") as pool:
        # A few at a time (no wait per dataset), each in a copy of this run's context (its flow run id).
        contexts = [contextvars.copy_context() for _ in runs]
        for run, job in zip(runs, pool.map(lambda c, r: c.run(start, r), contexts, runs), strict=True):
            run.job = job
    for run in runs:
        if run.job.job_id:
            run.record["job_id"] = run.job.job_id
            folder.line(
                f"[Internal (jobs)] analysis {run.number} ({run.dataset.label}) is job {run.job.job_id} "
                f"(interlinked status {run.job.job_id})",
                internal=True,
                upload=False,
            )
        else:
            folder.line(
                f"[Internal (jobs)] analysis {run.number} ({run.dataset.label}) has no job record "
                f"({'; '.join(run.job.problems)[:300]}); it runs all the same",
                internal=True,
                upload=False,
            )


def _taggable(group: str) -> bool:
    from flows.jobs.triage import check_group

    try:
        check_group(group)
    except ValueError:
        return False
    return True


def _run_datasets(context: JobContext, limit: int) -> dict[str, str]:
    """Analyse every run, at most ``limit`` at a time; return label → final status."""
    finished: queue.Queue = queue.Queue()
    pending = list(context.runs.values())
    running = 0
    # Every run has a time limit: the duration its cost was estimated for (at least a floor); what
    # it really ran is what the budget is charged (_settle).
    task_ = analyse_dataset.with_options(timeout_seconds=time_limit_seconds(context.config))
    while pending or running:
        while pending and running < limit:
            run = pending.pop(0)
            future = task_.submit(context, run)
            future.add_done_callback(finished.put)
            running += 1
        finished.get()
        running -= 1
    return {label: run.record.get("status", "UNKNOWN") for label, run in context.runs.items()}


class Refusal(Exception):
    """Refuse the submission at NeuroCAAS step ``step``."""

    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


STEP_NAMES = {1: "Initialization", 2: "Validation", 3: "Environment Setup", 4: "Initialize Processing"}


def _refuse(folder: JobFolder, step: int, reason: str):
    folder.refuse(step, STEP_NAMES[step], reason)
    folder.end("REFUSED", reason)
    get_run_logger().warning("submission refused: %s", reason)
    return Failed(name="Refused", message=f"refused: {reason}")


def _read_submission(store: ObjectStore, key: str, version_id: str | None) -> tuple[bytes, dict[str, Any]]:
    reply = store.get(key, version_id=version_id)
    identity = {
        "etag": reply["ETag"].strip('"'),
        "version_id": reply.get("VersionId"),
        # An unversioned bucket gives the same ETag to an identical re-upload: its upload time
        # tells it from a duplicate delivery of the same upload.
        "last_modified": reply["LastModified"].isoformat() if reply.get("LastModified") else None,
    }
    if reply.get("ContentLength", 0) > MAX_SUBMISSION_BYTES:
        return b"", {**identity, "too_large": True}
    return reply["Body"].read(), identity


def _claim(
    store: ObjectStore,
    prefix: str,
    identity: dict[str, Any],
    flow_run_id: str | None,
    settings: SubmissionSettings,
) -> tuple[Claim | None, str | None]:
    """Claim the job folder: ``(claim, None)``, or ``(None, reason)`` when an earlier job with
    this timestamp still runs after waiting ``submission_rerun_wait_seconds`` for it."""
    deadline = time.monotonic() + settings.submission_rerun_wait_seconds
    while True:
        claim = claim_folder(store, prefix, identity)
        if claim.ours:
            return claim, None
        if store.exists(prefix + END) or not _active(claim.record.get("flow_run_id")):
            taken = supersede(store, prefix, claim, identity)
            if taken is not None:
                return Claim(True, {**identity}, fresh=True, etag=None), None
            continue  # another re-upload replaced the claim at the same moment: look again
        if time.monotonic() >= deadline:
            owner = claim.record.get("submission", "another submission")
            return None, (
                f"timestamp is used by a job still running ({owner}, flow run "
                f"{claim.record.get('flow_run_id')}); waited {settings.submission_rerun_wait_seconds:g} s "
                "for it to end: submit again when it has ended, or with another timestamp"
            )
        time.sleep(1.0)


def _active(flow_run_id: str | None) -> bool:
    """Whether that flow run is still running (unknown runs count as ended)."""
    if not flow_run_id:
        return False
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
        return state is not None and not state.is_final()
    except Exception:
        return False


@flow(
    name=FLOW_NAME,
    description="Validate and run one S3 submission ({group}/submissions/*.json) into {group}/results/job__{bucket}_{timestamp}/.",
    persist_result=False,
)
def process_submission(
    bucket: str,
    key: str,
    etag: str | None = None,
    version_id: str | None = None,
    writer: str | None = None,
):
    """``writer``: the principalId of the identity that wrote the submit file, as S3's event names
    it (``AWS:<UserId>``, ``AWS:<RoleId>:<session>``); None or empty when unknown. A registered
    identity of another group is refused (:mod:`flows.submissions.writers`)."""
    logger = get_run_logger()
    store = ObjectStore(bucket)  # the bucket of the event: the shared analysis bucket or an analysis's own
    settings = SubmissionSettings()
    run = get_run_context().flow_run
    flow_run_id = str(run.id) if run else None
    group, name = parse_submission_key(key)  # the bridge routes only such keys; anything else fails here

    try:
        body, identity = _read_submission(store, key, version_id)
    except ObjectMissing:
        logger.warning("s3://%s/%s no longer exists: nothing to do", bucket, key)
        return Completed(name="Skipped", message=f"s3://{bucket}/{key} no longer exists")
    identity = {"submission": f"s3://{bucket}/{key}", "key": key, **identity, "flow_run_id": flow_run_id}

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
    identity_text = f"{key}@{identity['etag']}:{identity.get('version_id')}:{identity.get('last_modified')}"
    if timestamp is None:
        prefix = refusal_prefix(group, bucket, safe_label(name.removesuffix(".json")), identity_text)
    else:
        prefix = results_prefix(group, bucket, timestamp)
    bucket_analysis = analysis_for_bucket(bucket, settings=settings)

    def folder_at(prefix: str) -> JobFolder:
        return JobFolder(
            store,
            prefix,
            job_id=timestamp or name,
            version=f"interlinked {bucket_analysis or 'shared bucket'}",
        )

    # The writer: another group's identity is refused before anything of this group is touched
    # (a refusal folder of its own: the earlier job of this timestamp, if any, stays as it is).
    written = _writer_check(writer, group)
    if written.refusal is not None:
        prefix = refusal_prefix(group, bucket, safe_label(timestamp or name), identity_text)
        folder = folder_at(prefix)
        folder.put_json("logs/submission.json", {**identity, "writer": writer, "refused": written.refusal})
        folder.line(f"[Internal (init)] submit file s3://{bucket}/{key}: {written.note}", internal=True)
        return _refuse(folder, 1, written.refusal)

    # 2. Claim the folder: one job at a time; a re-upload re-runs once the earlier job has ended.
    claim, busy = _claim(store, prefix, identity, flow_run_id, settings)
    if claim is None:
        prefix = refusal_prefix(group, bucket, safe_label(timestamp or name), identity_text)
        folder = folder_at(prefix)
        folder.put_json("logs/submission.json", {**identity, "refused": busy})
        return _refuse(folder, 1, busy or "refused")
    if not claim.fresh and claim.record.get("flow_run_id") != flow_run_id:
        duplicate = _duplicate_of(store, prefix, claim.record, flow_run_id)
        if duplicate is not None:
            return duplicate
    folder = folder_at(prefix)
    logger.info("results folder s3://%s/%s", bucket, prefix)

    try:
        folder.line("[Internal (init)] Initializing job manager.", internal=True, status="VALIDATING")
        folder.line(
            f"[Internal (init)] submit file s3://{bucket}/{key} ({len(body)} bytes, etag {identity['etag']}); "
            f"flow run {_ui_link(flow_run_id)}",
            internal=True,
        )
        folder.line(f"[Internal (init)] writer check: {written.note}", internal=True)
        if problem is not None:
            return _refuse(folder, 1, problem)
        try:
            submission = parse_submission(bucket, key, document)
        except SubmissionRefused as refused:
            return _refuse(folder, 1, refused.reason)
        instance = _instance_type(folder, submission)
        result_target = None
        if "resultpath" in submission.extras:
            result_target = _result_target(submission.extras["resultpath"], prefix, settings)
            if isinstance(result_target, str):
                return _refuse(folder, 1, result_target)
            folder.line(
                f"[Internal (init)] storage bypass: results go to s3://{result_target[0]}/{result_target[1]}",
                internal=True,
            )
        for extra in sorted(set(submission.extras) - set(KNOWN_FIELDS)):
            folder.line(
                f"[Internal (init)] submit field {extra!r} is not a NeuroCAAS field: ignored", internal=True
            )
        if "exitcode" in submission.extras:
            folder.line(
                "[Internal (init)] submit field 'exitcode' (set by the NeuroCAAS client) noted", internal=True
            )
        datanames = [d.key for d in submission.datasets]
        folder.line(
            f"[Internal (init)] Analysis request with dataset(s): "
            f"{datanames[0] if len(datanames) == 1 else datanames}, config file {submission.configname}",
            internal=True,
        )
        scoped = _scope(store, submission.group, prefix, result_target, folder)
        if isinstance(scoped, str):
            return _refuse(folder, 1, scoped)
        folder.step(1, STEP_NAMES[1])

        # 2. Validation: only the group's own inputs and configs are read.
        try:
            submission, config = _validate(store, submission, bucket_analysis, folder, reader=scoped)
        except Refusal as refused:
            return _refuse(folder, refused.step, refused.reason)
        quota = quota_for(group)
        price = instance.price_per_hour if instance else quota.price_per_hour
        context = JobContext(
            store=store,
            folder=folder,
            submission=submission,
            config=config,
            instance_type=instance.name if instance else (submission.instance_type or "default"),
            price_per_hour=price,
            scoped=scoped,
        )
        if result_target is not None:
            context.result_store = ObjectStore(result_target[0], context.data.client)
            context.result_prefix = result_target[1]
        refusal = _charge(context, quota, identity)
        if refusal:
            return _refuse(folder, 2, refusal)
        folder.step(2, STEP_NAMES[2])

        # 3. Environment: reserved keys, scratch space, a job slot of the group.
        try:
            _environment(folder, config)
        except Refusal as refused:
            return _refuse(folder, refused.step, refused.reason)

        def waiting(in_use: int, limit: int) -> None:
            folder.line(
                f"[Internal (acquire_instances)] waiting: {in_use} of {limit} slots of {group} in use",
                internal=True,
                status="WAITING",
            )

        try:
            with job_slot(
                group, quota.max_concurrent_jobs, wait_seconds=quota.slot_wait_seconds, on_wait=waiting
            ):
                if folder.status == "WAITING":
                    folder.line(f"[Internal (acquire_instances)] a slot of {group} is free", internal=True)
                folder.step(3, STEP_NAMES[3], status="RUNNING")
                return _accepted(context, quota, instance)
        except NoSlot as refused:
            return _refuse(folder, 3, str(refused))
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        try:
            folder.line(f"[Job Manager] INTERNAL ERROR. {reason}", status="FAILED")
            folder.line("[Job Manager] Shutting down job.")
            folder.end("FAILED", reason)
        finally:
            logger.error("submission failed: %s", reason)
        raise


def _writer_check(writer: str | None, group: str) -> WriterCheck:
    """:func:`flows.submissions.writers.check_writer` against the registry in the data bucket. A
    registry that cannot be read decides nothing: accepted as before, and said in the certificate."""
    if not writer:
        return check_writer(None, group, Registry())
    try:
        registry = load_registry(data_store())
    except Exception as error:
        reason = f"the group registry could not be read ({type(error).__name__}: {error})"
        get_run_logger().warning("writer check: %s", reason)
        return WriterCheck(writer, frozenset(), None, f"written by {writer}; {reason}: accepted")
    for problem in registry.problems:
        get_run_logger().warning("group registry: %s", problem)
    return check_writer(writer, group, registry)


def _scope(
    store: ObjectStore,
    group: str,
    prefix: str,
    result_target: tuple[str, str] | None,
    folder: JobFolder,
) -> ObjectStore | str | None:
    """The submission's own store (:mod:`flows.submissions.scoped`): a session of the submission
    role that reads only the group's ``inputs/`` and ``configs/`` and writes only this job's
    results; None (logged) when no role is configured; or the reason the submission is refused
    (a name that cannot be put in a policy literally)."""
    try:
        policy = session_policy(store.bucket, group, prefix, result_target=result_target)
    except ScopeError as refused:
        return f"cannot limit this submission's credentials to its own keys: {refused}"
    role = role_arn()
    if role is None:
        get_run_logger().warning(
            "no submission role (INTERLINKED_SUBMISSION_ROLE_ARN): this submission reads its inputs "
            "and writes its results with the flow run's own credentials (unscoped)"
        )
        return None
    scoped = scoped_store(store.bucket, policy, group=group, role=role)
    folder.line(
        "[Internal (init)] credentials: a session of the submission role, limited to "
        f"{group}/inputs/, {group}/configs/ (read) and this job's results (write)",
        internal=True,
    )
    return scoped


def _result_target(value: Any, prefix: str, settings: SubmissionSettings) -> tuple[str, str] | str:
    """Where a ``resultpath`` (``s3://bucket/prefix`` or ``bucket/prefix``) sends the results:
    ``(bucket, key prefix)`` under it, named after the job folder so two jobs never share one — or
    the reason it is refused (not a location, or not in ``submission_resultpath_allowed``)."""
    text = value.strip() if isinstance(value, str) else ""
    bucket, _, path = text.removeprefix("s3://").partition("/")
    if not bucket:
        return f"resultpath {value!r} is not an S3 location: give s3://bucket/prefix"
    allowed = settings.submission_resultpath_allowed
    if not location_allowed(bucket, path, allowed):
        where = ", ".join(allowed) or "nowhere: storage bypass is not enabled on this stack"
        return (
            f"resultpath {value!r}: storage bypass may write to {where} "
            f"(INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED); remove resultpath to get the results in {prefix}"
        )
    job = prefix.rstrip("/").rsplit("/", 1)[-1]
    return bucket, "/".join(part for part in (path.strip("/"), job, "process_results") if part) + "/"


def _instance_type(folder: JobFolder, submission: Submission):
    """The submit file's ``instance_type`` (its price and CPUs), logged as NeuroCAAS logs it."""
    if submission.instance_type is None:
        folder.line("[Internal (init)] Using default instance type from config file.", internal=True)
        return None
    known = INSTANCE_TYPES.get(submission.instance_type)
    if known is None:
        folder.line(
            f"[Internal (init)] instance type {submission.instance_type} is not known here: "
            "default resources and price",
            internal=True,
        )
        return None
    folder.line(
        f"[Internal (init)] Using instance type {known.name} ({known.vcpus} vCPU, {known.memory_gib:g} GiB, "
        f"${known.price_per_hour:g}/h)",
        internal=True,
    )
    return known


def _folder_kinds(store: ObjectStore, prefix: str) -> tuple[list[str], list[str]]:
    """The files under a folder dataset and the input kinds they make (``10x-dir`` for a 10x matrix)."""
    files = [k for k in store.keys(prefix) if not k.endswith("/")]
    top = {k[len(prefix) :] for k in files if "/" not in k[len(prefix) :]}
    if top & {"matrix.mtx", "matrix.mtx.gz"}:
        return files, ["10x-dir"]
    return files, sorted({input_kind(k) for k in files})


def _validate(
    store: ObjectStore,
    submission: Submission,
    bucket_analysis: str | None,
    folder: JobFolder,
    *,
    reader: ObjectStore | None = None,
) -> tuple[Submission, AnalysisConfig]:
    """Existence, folders, the config and the analysis: the submission as it will run. The
    config is read with ``reader`` (the submission's own session), existence checked with ``store``."""
    keys: list[str] = []
    folders: dict[str, list[str]] = {}
    kinds: list[str] = []
    total_bytes = 0
    for dataset in submission.datasets:
        key = dataset.key
        head = None if dataset.is_directory else store.head(key)
        if head is not None:
            keys.append(key)
            kinds.append(input_kind(key))
            total_bytes += int(head.get("ContentLength", 0))
            continue
        prefix = key if dataset.is_directory else key + "/"
        files, folder_kinds = _folder_kinds(store, prefix)
        if not files:
            raise Refusal(
                2,
                f"dataname {key!r} does not exist"
                + (" (no objects under it)" if dataset.is_directory else ""),
            )
        keys.append(prefix)
        folders[prefix] = files
        kinds.extend(folder_kinds)
        total_bytes += sum(int((store.head(name) or {}).get("ContentLength", 0)) for name in files)
    limit = SubmissionSettings().submission_max_input_bytes
    if total_bytes > limit:
        raise Refusal(
            2,
            f"the datasets hold {total_bytes / 1e9:.2f} GB; a submission may read at most {limit / 1e9:.2f} GB "
            "(INTERLINKED_SUBMISSION_MAX_INPUT_BYTES)",
        )
    if store.head(submission.configname) is None:
        raise Refusal(2, f"configname {submission.configname!r} does not exist")
    try:
        reply = (reader or store).get(submission.configname)
        if reply.get("ContentLength", 0) > MAX_CONFIG_BYTES:
            raise Refusal(2, f"configname {submission.configname!r} is larger than {MAX_CONFIG_BYTES} bytes")
        document = parse_config_text(reply["Body"].read(), submission.configname)
        config = parse_config(document, bucket_analysis=bucket_analysis, kinds=kinds)
    except ConfigRefused as refused:
        raise Refusal(2, str(refused)) from None
    # A folder is one dataset for an analysis that reads folders (a 10x matrix), otherwise each
    # of its files is one (NeuroCAAS: a folder dataname runs every file under it).
    final: list[str] = []
    for key in keys:
        if key in folders and "10x-dir" not in config.analysis.input_kinds:
            final.extend(folders[key])
            folder.line(
                f"[Internal (check_existence)] folder {key} holds {len(folders[key])} dataset(s)",
                internal=True,
            )
        else:
            final.append(key)
    if config.ensemble_size and len(final) != 1:
        raise Refusal(
            2, f"an ensemble (ensemble_size {config.ensemble_size}) runs one dataset, got {len(final)}"
        )
    runs = len(final) * (config.ensemble_size or 1)
    if runs > MAX_DATASETS:
        raise Refusal(2, f"the submission makes {runs} runs; at most {MAX_DATASETS} per submission")
    try:
        check_inputs(config, final)
    except ConfigRefused as refused:
        raise Refusal(2, str(refused)) from None
    chosen = {
        "bucket": "this bucket is the analysis",
        "config": "named by the config",
        "inputs": "the only analysis reading these datasets (the config names none)",
    }[config.chosen_by]
    folder.line(f"[Internal (check_existence)] analysis {config.analysis.name!r}: {chosen}", internal=True)
    if config.ignored:
        folder.line(
            f"[Internal (parse_config)] config keys not read by {config.analysis.name!r}: {', '.join(config.ignored)}",
            internal=True,
        )
    datasets = tuple(dataset_labels(final, ensemble_size=config.ensemble_size))
    return dataclasses.replace(submission, datasets=datasets), config


def _charge(context: JobContext, quota: Quota, identity: dict[str, Any]) -> str | None:
    """Charge the job's cost bound to the group's budget; the refusal reason, or None."""
    submission, config, folder = context.submission, context.config, context.folder
    runs = len(submission.datasets)
    cost = config.estimated_cost(datasets=runs, price_per_hour=context.price_per_hour)
    context.ledger_job = f"{submission.bucket}/{submission.results_prefix}@{identity.get('etag')}:{identity.get('last_modified')}"
    try:
        account = charge_budget(
            data_store(),
            group=submission.group,
            job=context.ledger_job,
            cost=cost,
            budget=quota.budget,
            detail={"submission": identity["submission"], "flow_run_id": identity.get("flow_run_id")},
        )
    except OverBudget as refused:
        return (
            f"{refused} (estimate: {config.duration_hours:g} h x {runs} dataset(s) x "
            f"{context.price_per_hour:g} per hour)"
        )
    folder.line(
        f"[Internal (get_costmonitoring)] Projected total costs: ${account['spent']:g} "
        f"(this job: {config.duration_hours:g} h x {runs} x ${context.price_per_hour:g}/h = ${cost:g}). "
        f"Remaining budget: ${account['remaining']:g}",
        internal=True,
    )
    return None


def time_limit_seconds(config: AnalysisConfig) -> float:
    """Each run's time limit: the config's duration (``__duration__``, ``duration_hours`` or the
    analysis' default), at least ``submission_min_time_limit_seconds``."""
    return max(config.duration_hours * 3600, SubmissionSettings().submission_min_time_limit_seconds)


def time_limit_text(config: AnalysisConfig) -> str:
    """The time limit and where it comes from, for the certificate and the status files."""
    if config.duration_minutes is not None:
        source = "__duration__"
    elif config.document.get("duration_hours"):
        source = "duration_hours"
    else:
        source = "the analysis' default"
    limit = time_limit_seconds(config)
    if limit > config.duration_hours * 3600:
        source = f"the floor; {source} asks for {config.duration_hours * 60:g}"
    return f"{limit / 60:g} minute{'' if limit == 60 else 's'} ({source})"


def _settle(context: JobContext, quota: Quota) -> None:
    """Charge the measured cost (run time x price) instead of the estimate, in the group's ledger."""
    if context.ledger_job is None:
        return
    seconds = sum(run.seconds for run in context.runs.values())
    measured = round(seconds / 3600 * context.price_per_hour, 6)
    try:
        account = settle_budget(
            data_store(),
            group=context.submission.group,
            job=context.ledger_job,
            cost=measured,
            budget=quota.budget,
        )
    except Exception as error:  # the estimate stays charged: an upper bound, never an undercharge
        get_run_logger().warning("could not settle the budget of %s: %s", context.submission.group, error)
        return
    if account is not None:
        context.folder.line(
            f"[Internal (get_costmonitoring)] Measured cost: ${measured:g} ({seconds:.1f} s of analysis "
            f"x ${context.price_per_hour:g}/h), charged instead of the estimate. "
            f"Remaining budget: ${account['remaining']:g}",
            internal=True,
        )


def _environment(folder: JobFolder, config: AnalysisConfig) -> None:
    """NeuroCAAS's parse_config lines, and the scratch space ``__dataset_size__`` asks for."""
    if config.duration_minutes is not None:
        folder.line(
            f"[Internal (parse_config)] parameter __duration__ given: {config.duration_minutes:g} "
            "(minutes: each run's time limit and the cost bound)",
            internal=True,
        )
    else:
        folder.line(
            "[Internal (parse_config)] parameter __duration__ not given, proceeding with standard compute launch.",
            internal=True,
        )
    if config.dataset_size_gb is not None:
        free = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
        folder.line(
            f"[Internal (parse_config)] parameter __dataset_size__ given: {config.dataset_size_gb:g} "
            f"(GB of scratch; {free:.1f} GB free)",
            internal=True,
        )
        if free < config.dataset_size_gb:
            raise Refusal(
                3,
                f"__dataset_size__ asks for {config.dataset_size_gb:g} GB of scratch space; "
                f"only {free:.1f} GB are free here",
            )
    else:
        folder.line(
            "[Internal (parse_config)] parameter __dataset_size__ is not given, proceeding with standard storage.",
            internal=True,
        )
    if config.ensemble_size:
        folder.line(
            f"[Internal (parse_config)] parameter ensemble_size given: {config.ensemble_size} "
            f"(jobnb 1..{config.ensemble_size}{', mode ' + str(config.mode) if config.mode is not None else ''})",
            internal=True,
        )


def _accepted(context: JobContext, quota: Quota, instance) -> Any:
    folder, submission, config = context.folder, context.submission, context.config
    seed = folder.prefix + (get_run_context().flow_run.id.hex if get_run_context().flow_run else "")
    for number, dataset in enumerate(submission.datasets, start=1):
        run = Run(
            dataset=dataset, number=number, instance=_instance_id(seed, number), command=str(uuid.uuid4())
        )
        context.runs[dataset.label] = run
        folder.line(
            f"[Utils] New instance ec2.Instance(id='{run.instance}') created!", internal=True, upload=False
        )
    # The config goes with the results (NeuroCAAS's runner copies it to process_results/); an
    # ensemble's per-run configs too, named as NeuroCAAS names them.
    context.put_result(
        submission.configname.rsplit("/", 1)[-1], context.data.read_bytes(submission.configname)
    )
    for run in context.runs.values():
        if run.dataset.jobnb is not None:
            context.put_result(
                f"{submission.job_name}inst{run.dataset.jobnb}config.json",
                (json.dumps(config.run_config(run.dataset.jobnb), indent=4, default=str) + "\n").encode(),
            )
    runs = len(context.runs)
    limit = min(quota.dataset_concurrency, runs, instance.vcpus if instance else runs)
    _start_jobs(context, limit)
    for run in context.runs.values():
        run.steps.append("initialize")
        run.record["analysis"] = config.analysis.name
        if run.dataset.jobnb is not None:
            run.record["jobnb"] = run.dataset.jobnb
        context.write_status(run, status=INITIALIZING, upload_certificate=False)
    folder.line(f"[Internal (start_instance)] Created {runs} immutable analysis environments.", internal=True)
    for run in context.runs.values():
        folder.line(
            f"[Internal (process_inputs)] Starting analysis {run.number} with parameter set {run.dataset.name}",
            internal=True,
        )
    folder.line("[Internal (process_inputs)] All jobs submitted. Processing...", internal=True)
    folder.line(
        f"[Internal (monitor)] each analysis run stops at its time limit: {time_limit_text(config)}",
        internal=True,
    )
    folder.step(4, STEP_NAMES[4])
    folder.line("JOB MONITOR LOG COMPLETE. SEE TOP FOR LIVE PER-DATASET MONITORING")
    statuses = _run_datasets(context, limit)
    _settle(context, quota)
    failed = sorted(label for label, status in statuses.items() if status != SUCCESS)
    succeeded = runs - len(failed)

    def finish(status: str, summary: str) -> str:
        folder.line(f"[Job Manager] JOB FINISHED: {status}. {summary}", status=status)
        folder.end(status, summary)
        return summary

    if not failed:
        return Completed(message=finish("COMPLETED", f"{succeeded} of {runs} dataset(s) succeeded"))
    reasons = "; ".join(f"{label}: {context.runs[label].record.get('failure')}" for label in failed)
    if succeeded:
        summary = f"{succeeded} of {runs} dataset(s) succeeded; failed: {reasons}"
        return Completed(name="Partially completed", message=finish("PARTIAL", summary))
    summary = f"every dataset failed: {reasons}"
    return Failed(message=finish("FAILED", summary))


def _duplicate_of(store: ObjectStore, prefix: str, record: dict[str, Any], flow_run_id: str | None):
    """The same upload reached another run too — e.g. one event delivered by two paths. Done or in
    progress there: nothing to do here. That run ended without end.txt (crashed): take over.
    Returns the state to end with, or None to go on."""
    other = record.get("flow_run_id")
    if store.exists(prefix + END):
        return Completed(name="Duplicate", message=f"already processed by flow run {other}")
    if _active(other):
        return Completed(name="Duplicate", message=f"being processed by flow run {other}")
    get_run_logger().warning("flow run %s ended without end.txt; this run takes over", other)
    take_over_claim(store, prefix, record, flow_run_id)
    return None

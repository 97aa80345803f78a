"""PrepareExperiment (seed 001) as a flow: a 10x count matrix in S3 → a ready experiment.

``prepare-experiment`` downloads ``s3://{sourceBucket}/{sourceMatrixPath}`` (a 10x matrix
directory: ``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``; or
one ``.h5`` 10x HDF5 file or ``.h5ad`` of raw counts), runs :func:`analyses.prepare_experiment`
(QC, normalisation, highly variable genes, PCA, neighbours, clustering, UMAP), stores
``s3://{data}/experiments/{experimentId}/processed.h5ad`` and then publishes the task's
WorkResponse on the ``work_results`` topic — exactly once per ``response_id`` (a response record in
S3, shared with the analysis service, is checked first). A failure is answered too, with the
analysis' stable code (``SOURCE_NOT_FOUND``, ``MISSING_INPUT_FILE``, ``INVALID_INPUT_DATA``,
``NO_CELLS_LEFT``, ``INVALID_REQUEST``, else ``PREPARE_FAILED``), and the run then fails.

It is heavy (minutes and GBs for 100k cells), so it runs as a flow run of the
``prepare-experiment`` deployment (local pool here, ECS/Batch on AWS), started by the analysis
service, or by hand: ``prefect deployment run prepare-experiment/local -p request='{...task...}'``.

Every run is a job of type ``prepare-experiment`` (:mod:`flows.jobs`): a run started with a
``request`` makes its job itself (DISPATCHED to the run, then one execution), a run started with
``id`` (``interlinked jobs create prepare-experiment --input '{"request": {...}}' --dispatch``, or
a retry by the sweeper) executes that job, whose ``inputData`` is ``{"request", "responseId",
"topicArn"}``. The execution reports each analysis step as progress (``metrics.step``), ends with
the summary as ``outputData`` and the experiment as ``outputFiles.experiment``, or with FAILURE:
the analysis' code in the reason (``"SOURCE_NOT_FOUND: ..."``), the failure code of
:mod:`flows.jobs.failures` (``OUT_OF_MEMORY`` for a ``MemoryError``, else ``CODE_ERROR``). The
job store is bookkeeping here: when it is down the experiment is prepared and answered all the
same (the run log says the job could not be recorded).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

import blocks
from blocks.errors import is_missing
from blocks.s3 import ObjectMissing, ObjectStore, data_store
from flows.analysis.experiments import store_experiment_file
from flows.analysis.protocol import (
    ErrorCode,
    ServiceError,
    encode,
    error_response,
    parse_task,
    request_identity,
    response_attributes,
    response_record,
    response_record_key,
    work_response,
)
from flows.analysis.service.settings import ServiceSettings
from flows.analysis.sources import check_request_allowed
from flows.analysis.tasks import prepare_parameters, prepare_summary
from flows.aws_tasks import aws_task
from flows.jobs.failures import FailureCode, from_exception
from flows.jobs.work import TrackedJob

FLOW_NAME = "prepare-experiment"
JOB_TYPE = "prepare-experiment"
_MATRIX_NAMES = {
    "matrix.mtx",
    "matrix.mtx.gz",
    "barcodes.tsv",
    "barcodes.tsv.gz",
    "features.tsv",
    "features.tsv.gz",
    "genes.tsv",
    "genes.tsv.gz",
}


class PrepareFailed(RuntimeError):
    """The experiment could not be prepared; the requester got an error response saying why."""


@aws_task
def download_source(bucket: str, path: str, destination: Path) -> Path:
    """Download the source matrix (a 10x directory, or one .h5/.h5ad file); returns the local path."""
    source = ObjectStore(bucket, data_store().client)
    path = path.lstrip("/")
    if path.endswith((".h5", ".h5ad")):
        try:
            return source.download(path, destination / PurePosixPath(path).name)
        except ObjectMissing:
            raise ServiceError(
                ErrorCode.SOURCE_NOT_FOUND, f"No source matrix at {source.uri(path)}"
            ) from None
    prefix = path if not path or path.endswith("/") else path + "/"
    try:
        found = list(source.keys(prefix, delimiter="/"))
    except ClientError as error:
        if is_missing(error):
            raise ServiceError(
                ErrorCode.SOURCE_NOT_FOUND, f"Source bucket {bucket!r} does not exist"
            ) from None
        raise
    wanted = [key for key in found if PurePosixPath(key).name in _MATRIX_NAMES]
    if not wanted:
        listed = ", ".join(PurePosixPath(key).name for key in found[:10]) or "nothing"
        raise ServiceError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"{source.uri(prefix)} holds no 10x matrix files (matrix.mtx.gz, barcodes.tsv.gz, "
            f"features.tsv.gz); found {listed}",
        )
    directory = destination / "matrix"
    directory.mkdir()
    for key in wanted:
        source.download(key, directory / PurePosixPath(key).name)
    return directory


@task(cache_policy=NO_CACHE, persist_result=False)
def run_preparation(source: Path, parameters: dict[str, Any], tracked: TrackedJob | None = None) -> Any:
    """The analysis itself, with progress in the run log and as the job's progress (its progress
    artifact on the run; a plain progress artifact when there is no job record)."""
    import anndata
    import scanpy as sc

    import analyses

    logger = get_run_logger()
    tracking = tracked is not None and tracked.execution_id is not None
    progress_id = (
        None if tracking else create_progress_artifact(progress=0.0, description="Preparing the experiment")
    )

    def progress(step: str, fraction: float) -> None:
        logger.info("%s done (%.0f %%)", step, fraction * 100)
        if tracking:
            tracked.progress(min(1.0, fraction), {"step": step})
        else:
            update_progress_artifact(progress_id, progress=round(fraction * 100, 1))

    try:
        if source.suffix == ".h5ad":
            return analyses.prepare_anndata(anndata.read_h5ad(source), progress=progress, **parameters)
        if source.suffix == ".h5":
            return analyses.prepare_anndata(sc.read_10x_h5(source), progress=progress, **parameters)
        return analyses.prepare_experiment(source, progress=progress, **parameters)
    except analyses.AnalysisError as error:
        raise ServiceError(error.code, error.message) from None


@aws_task
def store_experiment(adata: Any, experiment_id: str, workdir: Path) -> dict[str, str]:
    path = workdir / "processed.h5ad"
    adata.write_h5ad(path)
    uri, version = store_experiment_file(data_store(), path, experiment_id)
    return {"uri": uri, "version": version, "bytes": str(path.stat().st_size)}


@aws_task
def publish_response(response: dict[str, Any], response_id: str, topic_arn: str | None) -> str | None:
    """Publish once per ``response_id``: skipped (None) when its response record already exists."""
    store = data_store()
    record_key = response_record_key(response_id)
    if store.exists(record_key):
        get_run_logger().info("a response for %s was already published; not publishing again", response_id)
        return None
    topic = blocks.SnsTopic.load(blocks.WORK_RESULTS_TOPIC)
    if topic_arn:
        topic = topic.model_copy(update={"topic_arn": topic_arn})
    message_id = topic.publish(
        encode(response), attributes=response_attributes(response["request"], response)
    )
    store.put_json(
        record_key,
        response_record(
            response_id, response, message_id, by=f"flow run {get_run_context().task_run.flow_run_id}"
        ),
    )
    return message_id


@flow(
    name=FLOW_NAME,
    description="Prepare an experiment from a 10x count matrix in S3 and publish the PrepareExperiment response.",
    persist_result=False,
)
def prepare_experiment(
    request: dict[str, Any] | None = None,
    response_id: str | None = None,
    topic_arn: str | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """Run a PrepareExperiment task (the seed's JSON) and answer it on the work-results topic.

    Parameters
    ----------
    request
        The task: ``experimentId``, ``body.sourceBucket``, ``body.sourceMatrixPath`` and optional
        ``body.config`` (``minGenes``, ``nTopGenes``, ``resolution``, ... see
        ``flows.analysis.tasks.PREPARE_CONFIG``).
    response_id
        Identity of the delivery being answered (the analysis service passes the SQS message id);
        one response is published per id. Default: the request's uuid and a hash of it.
    topic_arn
        Topic to answer on; default: the ``work_results`` block.
    id
        Instead of ``request``: the ``prepare-experiment`` job to execute (its ``inputData`` holds
        the request, response id and topic).
    """
    if (request is None) == (id is None):
        raise ValueError(
            "give exactly one of request (a PrepareExperiment task) and id (a prepare-experiment job)"
        )
    logger = get_run_logger()
    if id is not None:
        tracked = _executing_job(id)
        data = tracked.job["inputData"]
        request = data["request"] if isinstance(data.get("request"), dict) else data
        response_id = response_id or data.get("responseId")
        topic_arn = topic_arn or data.get("topicArn")
    else:
        tracked = TrackedJob.start(
            JOB_TYPE,
            {"request": request, "responseId": response_id, "topicArn": topic_arn},
            execute=True,
            warn=logger.warning,
        )
    if tracked.job_id:
        logger.info("job %s (interlinked status %s)", tracked.job_id, tracked.job_id)
    return _prepare(request, response_id, topic_arn, tracked)


def _executing_job(job_id: str) -> TrackedJob:
    """The dispatched job ``job_id`` with a new execution (EXECUTE refused: the run fails, as a
    script job's does); from then on its record is kept best-effort, as a started one's."""
    from flows.jobs import client

    service = client.default_service()
    return TrackedJob(service.signal(job_id, "EXECUTE").to_json(), service=service).execute()


def _prepare(
    request: dict[str, Any], response_id: str | None, topic_arn: str | None, tracked: TrackedJob
) -> dict[str, Any]:
    logger = get_run_logger()
    tracked.execute()  # its progress and metrics artifacts on this run
    started = time.perf_counter()
    response_id = response_id or request_identity(request)
    summary: dict[str, Any] | None = None
    failure: ServiceError | None = None
    error_seen: BaseException | None = None
    try:
        task_ = parse_task(request, check_expiry=False)
        if task_.name != "PrepareExperiment":
            raise ServiceError(ErrorCode.INVALID_REQUEST, f"prepare-experiment got a {task_.name} task")
        parameters = prepare_parameters(task_.body)
        check_request_allowed(task_.body, task_.experiment_id, ServiceSettings())
        with tempfile.TemporaryDirectory(prefix="interlinked-prepare-") as workdir:
            source = download_source(
                task_.body["sourceBucket"], task_.body["sourceMatrixPath"], Path(workdir)
            )
            adata = run_preparation(source, parameters, tracked)
            stored = store_experiment(adata, task_.experiment_id, Path(workdir))
            summary = prepare_summary(
                adata,
                task_.experiment_id,
                uri=stored["uri"],
                version=stored["version"],
                seconds=time.perf_counter() - started,
            )
            del adata
        response = work_response(request, encode(summary))
    except ServiceError as error:
        failure = error
        response = error_response(request, error.code, error.message)
    except Exception as error:
        error_seen = error
        failure = ServiceError(ErrorCode.PREPARE_FAILED, f"{type(error).__name__}: {error}")
        response = error_response(
            request,
            ErrorCode.PREPARE_FAILED,
            f"Preparing the experiment failed: {type(error).__name__}: {error}"[:800],
        )
    try:
        publish_response(response, response_id, topic_arn)
        _report(request, summary, failure)
    except BaseException as error:
        tracked.fail(error)
        raise
    if failure is not None:
        logger.error("PrepareExperiment failed (%s): %s", failure.code, failure.message)
        code = from_exception(error_seen).code if error_seen is not None else FailureCode.CODE_ERROR
        tracked.fail(
            f"{failure.code}: {failure.message}", code=code, evidence={"errorCode": str(failure.code)}
        )
        raise PrepareFailed(f"{failure.code}: {failure.message}")
    tracked.progress(1.0, {k: summary[k] for k in ("cells", "genes", "clusters") if k in summary})
    tracked.outputs(data=summary, files={"experiment": summary["location"]})
    tracked.succeed()
    logger.info("experiment %s ready at %s", summary["experimentId"], summary["location"])
    return summary


def _report(request: dict[str, Any], summary: dict[str, Any] | None, failure: ServiceError | None) -> None:
    experiment = request.get("experimentId", "?")
    body = request.get("body") if isinstance(request.get("body"), dict) else {}
    lines = [
        f"# PrepareExperiment `{experiment}`",
        "",
        f"Source: `s3://{body.get('sourceBucket')}/{body.get('sourceMatrixPath')}`",
        "",
    ]
    if failure is not None:
        lines += [f"**Failed** with `{failure.code}`:", "", f"> {failure.message}"]
    else:
        lines += [
            "| | |",
            "|---|---|",
            f"| experiment | `{summary['location']}` (version `{summary['version']}`) |",
            f"| cells x genes | {summary['cells']} x {summary['genes']} |",
            f"| clusters | {summary['clusters']} (`{summary['clusteringColumn']}`) |",
            f"| embeddings | {', '.join(summary['embeddings'])} |",
            f"| QC | {json.dumps(summary['qc'])} |",
            f"| seconds | {summary['seconds']} |",
        ]
    create_markdown_artifact(
        key=f"prepare-{experiment}".lower().replace("_", "-").replace(".", "-")[:100],
        markdown="\n".join(lines),
        description=f"PrepareExperiment {experiment}: {'failed' if failure else 'ready'}",
    )

"""The Prefect side of the local stack: the work pool and the deployments of prefect.yaml.

:func:`deploy` runs ``prefect deploy --name local`` only when ``prefect.yaml`` or ``flows/`` changed
since the last time (or a deployment is missing, or the pool was replaced).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from interlinked.local.parts import client_env
from interlinked.local.processes import StackError, python_tool
from interlinked.settings import PROJECT_ROOT, Settings


def ensure_work_pool(name: str, worker_type: str, description: str) -> bool:
    """Create the pool with the worker type's default job template; replace it if its type differs.

    Returns True when the pool was (re)created: deployments must then be applied again, since a
    replaced pool's queues are new.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.plugins import load_prefect_collections
    from prefect.workers.base import BaseWorker

    load_prefect_collections()
    worker_class = BaseWorker.get_worker_class_from_type(worker_type)
    if worker_class is None:
        raise StackError(f"work pool {name}: unknown worker type {worker_type!r}")
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.type == worker_type:
            return False
        if existing is not None:
            client.delete_work_pool(name)
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=worker_type,
                description=description,
                base_job_template=worker_class.get_default_base_job_template(),
            )
        )
    return True


def _deployment_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in [PROJECT_ROOT / "prefect.yaml", *sorted((PROJECT_ROOT / "flows").rglob("*.py"))]:
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def local_deployment_names() -> list[str]:
    """``flow/deployment`` names of the local set declared in prefect.yaml."""
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    names = []
    for deployment in config.get("deployments", []):
        if deployment.get("name") == "local":
            flow_function = deployment["entrypoint"].split(":")[-1]
            names.append(f"{flow_function.replace('_', '-')}/local")
    return names


def _missing_deployments(names: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    missing = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                missing.append(name)
    return missing


def deployed_stamp(settings: Settings) -> Path:
    """The fingerprint of what was last deployed (``deploy`` skips when it is unchanged)."""
    return settings.state_dir / "deployed.sha256"


def deploy(settings: Settings, echo: Callable[[str], None], *, force: bool = False) -> None:
    """`prefect deploy --name local`, skipped when nothing it depends on changed."""
    stamp = deployed_stamp(settings)
    fingerprint = _deployment_fingerprint()
    expected = local_deployment_names()
    unchanged = not force and stamp.exists() and stamp.read_text() == fingerprint
    if unchanged and not _missing_deployments(expected):
        return
    echo(f"deploying {', '.join(expected)} from prefect.yaml")
    log = settings.logs_dir / "deploy.log"
    with log.open("ab") as out:
        result = subprocess.run(
            [python_tool("prefect"), "--no-prompt", "deploy", "--name", "local"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **client_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    missing = _missing_deployments(expected)
    if result.returncode != 0 or missing:
        tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-20:])
        raise StackError(
            f"deployments: `prefect deploy --name local` exited {result.returncode}"
            f"{'; missing ' + ', '.join(missing) if missing else ''}; its log is {log}\n    {tail}"
        )
    stamp.write_text(fingerprint)

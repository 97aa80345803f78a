"""The stock way, for side-by-side benchmarks: a trivial Prefect flow run through a deployment."""

from prefect import flow


@flow(name="bench-noop")
def noop(a: int = 1, b: int = 2) -> int:
    return a + b


@flow(name="bench-shell-task")
def shell_task(task_id: str = "t0", command: str = "true") -> int:
    """One task of a collection as a flow run of its own: its shell command, ``TASK_ID`` set."""
    import os
    import subprocess

    return subprocess.run(
        ["bash", "-c", command], env={**os.environ, "TASK_ID": task_id}, check=True
    ).returncode

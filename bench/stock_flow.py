"""The stock way, for side-by-side benchmarks: a trivial Prefect flow run through a deployment."""

from prefect import flow


@flow(name="bench-noop")
def noop(a: int = 1, b: int = 2) -> int:
    return a + b

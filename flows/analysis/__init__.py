"""The analysis service (seed 001): single-cell tasks in, one WorkResponse each out.

- :mod:`.protocol` — the wire contract (task JSON, WorkResponse, error codes, S3 layout);
- :mod:`.tasks` — each interactive task: a validated task + an experiment → result data;
- :mod:`.experiments` — experiments in S3 and in memory; importing them;
- :mod:`.service` — the warm, long-running service (``python -m flows.analysis.service``);
- :mod:`.prepare` — the ``prepare-experiment`` flow (PrepareExperiment);
- :mod:`.client` — send tasks and wait for their responses; import experiments.
"""

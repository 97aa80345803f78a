"""The analysis service (seed 001): single-cell tasks in, one WorkResponse each out.

- :mod:`.protocol` — the wire contract (task JSON, WorkResponse, error codes, S3 layout);
- :mod:`.tasks` — the protocol edge: each task's body fields → :mod:`analyses` parameters, and
  the result's keys back to the wire's camelCase (the one place that translates names);
- :mod:`.experiments` — experiments in S3 and in memory; importing them;
- :mod:`.service` — the warm, long-running service (``python -m flows.analysis.service``), a
  package split by role (settings, messages, journal, responses, recorder, prepare launcher,
  the service loop, the flow);
- :mod:`.prepare` — the ``prepare-experiment`` flow (PrepareExperiment);
- :mod:`.client` — send tasks and wait for their responses; import experiments.
"""

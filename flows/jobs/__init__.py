"""Job lifecycle (seed 004, Archimedes): every piece of work is a job with executions, progress,
metrics, outputs and failure reasons.

- :mod:`.model` — the job record (the seed's JSON names), its states and :class:`JobError`;
- :mod:`.machine` — the strict state machine (pure: a job in, its next version or a ``JobError`` out);
- :mod:`.store` — the store interface, the conditional-change loop, an in-memory store;
- :mod:`.postgres` — the PostgreSQL store (the source of truth, locally and on RDS);
- :mod:`.types` — job types and the deployment each one names (``job_types.json``);
- :mod:`.policy` — settings of checkpoints, memory escalation, triage, prices and budgets;
- :mod:`.checkpoints` — a small JSON checkpoint per progress update, handed to the next execution;
- :mod:`.memory` — OUT_OF_MEMORY → twice the memory up to a cap; the enforced local memory limit;
- :mod:`.triage` — estimations → pool, deployment and job variables (memory, cost-allocation tags);
- :mod:`.cost` — each execution's cost from run time, resources and prices; spend and budgets;
- :mod:`.client` — the SDK (``interlinked.jobs`` re-exports it): create, get, signal,
  update_execution, update, signal_execution, progress; each change also writes
  ``s3://{data}/results/{job_id}/job.json``.
"""

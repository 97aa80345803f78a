"""S3 submissions (seed 003, NeuroCAAS): ``{group}/submissions/*.json`` → an analysis per dataset.

- :mod:`.validation` — the submit file and its keys, checked before anything is read;
- :mod:`.registry` — the analyses a config can name, and their parameters;
- :mod:`.folder` — the results folder (certificate, status files, claim, end.txt);
- :mod:`.writers` — which identity wrote a submit file, and the registry of the groups' identities;
- :mod:`.quotas` — per-group limits and what enforces them: job slots (that queue), the budget ledger;
- :mod:`.flow` — the ``process-submission`` flow;
- :mod:`.client` — upload a submission and watch its results (``interlinked submissions``).
"""

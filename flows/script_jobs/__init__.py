"""Script jobs (seed 000): run any user script — Python, shell or R — described by ``{func,
arguments, name, script}``.

- :mod:`.spec` — the job description and its validation;
- :mod:`.layout` — where a job's spec, script, result and log live in the data bucket; ``ScriptJobError``;
- :mod:`.runners` (+ ``entry.py``, ``entry.R``) — run a script in a child process;
- :mod:`.flow` — the ``script-job`` flow; :mod:`.by_event` — ``script-job-submission``;
- :mod:`.client` — submit, status and wait (what ``interlinked submit|status`` call).
"""

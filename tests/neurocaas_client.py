"""Our own readers of NeuroCAAS's job files, written to the rules of the real clients (nothing of
theirs is vendored; each function names the source whose rules it follows).

Used by the unit tests (on the real files in ``tests/fixtures/neurocaas/`` and on what our flow
writes) and by the integration test (on a real job's folder, read back from the stack).
"""

from __future__ import annotations

import json
import re
from typing import Any

DIVIDER = "================"
STATUS_WORDS = {"INITIALIZING", "IN PROGRESS", "SUCCESS", "FAILED"}
# The keys of the status file NeuroCAAS's job manager writes first (ncap_iac/protocols/utilsparam/
# s3.py, initialize_datasets_dev), and those neurocaas_contrib's NeuroCAASDataStatus adds while a
# run goes (its ``writeorder``, less ``std``, which replaces the job manager's stdout/stderr).
STATUS_KEYS = ("instance", "command", "input", "status", "reason", "stdout", "stderr")
LIVE_KEYS = ("memory_usage", "cpu_usage", "job_start", "job_finish")
INSTANCE = re.compile(r"\[Utils\] New instance ec2\.Instance\(id='(?P<id>[^']*)'\) created!")


def parse_certificate(text: str) -> dict[str, dict[str, Any]]:
    """The monitoring rows of a certificate, by dataname, the way the NeuroCAAS interface client
    reads them (cellistigs/neurocaas_interface, ``neurocaas_interface/log.py``,
    ``NeuroCAASCertificate.process_rawcert``): split on ``\\n``; exactly two lines equal to
    ``================`` (else its assertion fails); every line between them is a row whose
    dataname is the text after ``DATANAME: `` up to the first space (its lazy regex stops there).
    Also returns each row's fields split on `` | `` (the ``dataset_template`` it writes)."""
    lines = text.split("\n")
    marks = [index for index, line in enumerate(lines) if line == DIVIDER]
    assert len(marks) == 2, f"the client needs exactly two {DIVIDER} lines, found {len(marks)}"
    rows: dict[str, dict[str, Any]] = {}
    for number in range(marks[0] + 1, marks[1]):
        line = lines[number]
        found = re.search(r"DATANAME: (.*?) ", line)
        dataname = found.group(1) if found else "groupname/inputs/dataname.ext"
        fields = dict(part.split(": ", 1) for part in line.split(" | ") if ": " in part)
        rows[dataname] = {"linenb": number, "line": line, **fields}
    return rows


def get_instances(text: str) -> dict[int, dict[str, str | None]]:
    """Instances and their datasets, as ``NeuroCAASCertificate.get_instances`` finds them (same
    file): numbered 1.. in the order of ``[Utils] New instance ec2.Instance(id='…') created!``
    lines; ``Starting analysis N with parameter set NAME`` … ``[+`` gives instance N's dataset
    (a line naming an instance number that was never created is a KeyError there)."""
    parse_certificate(text)  # the client parses the whole file first
    instances: dict[int, dict[str, str | None]] = {}
    for line in text.split("\n"):
        created = INSTANCE.search(line)
        if created:
            instances[len(instances) + 1] = {"id": created.group("id"), "dataset": None}
        if "Starting analysis " in line and " with parameter set " in line and "[+" in line:
            number = line.split("Starting analysis ")[-1].split(" with parameter set ")[0].strip()
            dataset = line.split(f"Starting analysis {number} with parameter set ")[-1].split("[+")[0]
            instances[int(number)]["dataset"] = dataset.strip()
    return instances


def job_manager_steps(text: str) -> list[str]:
    """``[Job Manager] STEP n/4 (…): OUTCOME`` lines, without their ``\\t [+…]`` time
    (cunningham-lab/neurocaas, ``ncap_iac/protocols/submit_start.py``, ``process_upload_dev``)."""
    return [line.split("\t [+")[0] for line in text.split("\n") if line.startswith("[Job Manager] STEP ")]


def read_status(text: str, *, live: bool = False) -> dict[str, Any]:
    """A per-dataset status file as NeuroCAAS's readers load it (neurocaas_contrib ``log.py``,
    ``NeuroCAASDataStatus.load_init_s3``: ``json.loads``); checks the job manager's keys (and with
    ``live`` the usage and times contrib's updates add) and NeuroCAAS's status words."""
    status = json.loads(text)
    wanted = STATUS_KEYS + (LIVE_KEYS if live else ())
    if "std" in status:  # contrib's update format: std in place of stdout/stderr
        wanted = tuple(key for key in wanted if key not in ("stdout", "stderr"))
    missing = [key for key in wanted if key not in status]
    assert not missing, f"status file lacks {missing}"
    assert status["status"] in STATUS_WORDS, status["status"]
    return status


def results_prefix(group: str, bucket: str, timestamp: str) -> str:
    """Where the client looks (``neurocaas_interface/jobtools.py``, ``NeuroCAASJob.run``):
    ``{group}/results/job__{bucket}_{timestamp}`` — listed as a prefix, ``certificate.txt`` in a
    key means started, ``end.txt`` in a key means finished."""
    return f"{group}/results/job__{bucket}_{timestamp}"


def download_by_basename(keys: list[str], prefix: str) -> dict[str, str]:
    """What a download of ``process_results/`` saves: the basename of every key (the client's
    downloader and ``aws s3 sync`` of a flat folder); a repeated basename would overwrite."""
    saved: dict[str, str] = {}
    for key in keys:
        if key.startswith(prefix + "/process_results/"):
            name = key.rsplit("/", 1)[-1]
            assert name not in saved, f"{name} would overwrite {saved[name]}"
            saved[name] = key
    return saved

"""What expires in the data bucket: the one list the Terraform storage module must match.

Each entry is a prefix the code writes (taken from the module that owns it, so the string exists
once) and the storage module's variable that sets its expiry in days. Terraform's
``local.expiring_prefixes.data`` (``infra/terraform/modules/storage/main.tf``) must have exactly
these rules; ``tests/unit/test_lifecycle_prefixes.py`` reads both and fails on a difference (it
once expired ``cache/``, which nothing writes, and never the analysis service's objects).
"""

from __future__ import annotations

from flows.analysis.protocol import RESPONSE_RECORD_PREFIX, RESULT_CACHE_PREFIX
from flows.script_jobs.layout import LOGS_PREFIX

# Lifecycle rule name (Terraform's ``expire-<name>``) → (prefix, variable with its days).
DATA_BUCKET_EXPIRY: dict[str, tuple[str, str]] = {
    "logs": (LOGS_PREFIX, "logs_expiration_days"),
    "analysis-cache": (RESULT_CACHE_PREFIX, "cache_expiration_days"),
    # Records of answered requests: kept longer than SQS keeps any message (14 days at most), so a
    # late redelivery still finds its record.
    "analysis-responses": (RESPONSE_RECORD_PREFIX, "response_records_expiration_days"),
}

"""The script-job description (seed 000: ``{func, arguments, name, script}``) and its validation."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

Language = Literal["python", "shell", "r"]

LANGUAGE_BY_SUFFIX: dict[str, Language] = {".py": "python", ".sh": "shell", ".r": "r"}
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
# A job's `arguments`, as compact JSON, may be at most this large. They travel to the script by file
# (`JOB_ARGUMENTS_FILE`), so the kernel's limits on argv and the environment do not apply; this bound
# keeps the spec object, the flow's memory and the job store reasonable. Larger data belongs in S3,
# with its key among the arguments.
MAX_ARGUMENTS_BYTES = 8 * 1024 * 1024
_IDENTIFIER = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


class JobSpecError(ValueError):
    """A job description is invalid; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid job description: {field}: {message}")
        self.field = field
        self.message = message


def language_of(script: str) -> Language | None:
    return LANGUAGE_BY_SUFFIX.get(PurePosixPath(script).suffix.lower())


class JobSpec(BaseModel):
    """What a script job runs. Unknown fields are refused so that a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, description="Human name; the flow run is named after it.")
    script: str = Field(
        min_length=1,
        description="A local file (uploaded on submit) or a key under s3://{data}/scripts/.",
    )
    # Validated after `script` (declaration order) so it can be inferred from the extension.
    language: Language | None = Field(
        default=None, validate_default=True, description="Inferred from the script's extension."
    )
    func: str | None = Field(
        default=None,
        validate_default=True,
        description="Function called with `arguments` (required for Python and R; optional for shell).",
    )
    arguments: dict[str, Any] = Field(default_factory=dict, description="Passed to `func` as one mapping.")
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="Kill the script after this long."
    )
    retries: int = Field(default=0, ge=0, le=10, description="Re-run a failed script this many times.")
    retry_delay_seconds: float = Field(default=10.0, ge=0, le=3600, description="Wait between retries.")
    debug: bool = Field(
        default=False, description="The seed's debug flag: the job's steps are logged in more detail."
    )

    @field_validator("name", "script", "func", "language", "debug", mode="before")
    @classmethod
    def _unbox(cls, value: Any) -> Any:
        """R's ``toJSON`` without ``auto_unbox`` sends ``["Test job"]``: a one-element array is its element."""
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    @field_validator("arguments")
    @classmethod
    def _arguments_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_ARGUMENTS_BYTES:
            raise ValueError(
                f"{size:,} bytes as JSON, over the limit of {MAX_ARGUMENTS_BYTES:,} bytes "
                f"({MAX_ARGUMENTS_BYTES // (1024 * 1024)} MiB); put large data in S3 and pass its key"
            )
        return value

    @field_validator("language")
    @classmethod
    def _infer_language(cls, value: Language | None, info: ValidationInfo) -> Language | None:
        if value is not None or "script" not in info.data:
            return value
        inferred = language_of(info.data["script"])
        if inferred is None:
            raise ValueError(
                f"cannot tell the language of {info.data['script']!r}: use a .py, .sh or .R file "
                "or set 'language' to python, shell or r"
            )
        return inferred

    @field_validator("func")
    @classmethod
    def _func_for_language(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, ""):
            language = info.data.get("language")
            if language in ("python", "r"):
                raise ValueError(f"required for {language} scripts: the name of the function to call")
            return None
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a function name")
        return value


def parse_job_spec(document: Any) -> JobSpec:
    """Validate a decoded job description, raising :class:`JobSpecError` naming the bad field."""
    if not isinstance(document, dict):
        raise JobSpecError("(document)", f"expected a JSON object, got {type(document).__name__}")
    try:
        return JobSpec.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        if field == "language" and "language" not in document:
            field = "script"  # the language was inferred from the script's name
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (allowed: " + ", ".join(JobSpec.model_fields) + ")"
        elif first["type"] == "missing":
            message = "missing (required)"
        raise JobSpecError(field, message.removeprefix("Value error, ")) from None

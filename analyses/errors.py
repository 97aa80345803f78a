"""Exceptions raised by :mod:`analyses`.

Every exception derives from :class:`AnalysisError` and carries a stable, machine-readable
:attr:`~AnalysisError.code` so that a service can turn it into an error response without parsing
messages. Exceptions caused by a bad request also derive from :class:`ValueError`; a missing input
file also derives from :class:`FileNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AnalysisError",
    "EmbeddingUnavailableError",
    "InvalidInputDataError",
    "InvalidRequestError",
    "MissingInputFileError",
    "NoCellsLeftError",
    "UnknownCellSetError",
]


class AnalysisError(Exception):
    """Base class of every error raised on purpose by :mod:`analyses`.

    Attributes
    ----------
    code
        Stable identifier of the kind of error (e.g. ``"INVALID_REQUEST"``), suitable as an API
        error code. Subclasses override it; it never changes for a given class.
    """

    code: str = "ANALYSIS_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The error as plain data: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}


class InvalidRequestError(AnalysisError, ValueError):
    """A request argument is invalid.

    Parameters
    ----------
    field
        Name of the offending argument or field (e.g. ``"order_by"``).
    message
        Human-readable explanation; should name the bad value.
    """

    code = "INVALID_REQUEST"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "field": self.field}


class UnknownCellSetError(InvalidRequestError):
    """One or more cell set ids do not exist in the experiment.

    Attributes
    ----------
    cell_set_ids
        The unknown ids, in the order they were requested.
    """

    code = "UNKNOWN_CELL_SET"

    def __init__(self, cell_set_ids: Iterable[str], *, field: str = "cell_sets") -> None:
        self.cell_set_ids = list(cell_set_ids)
        listed = ", ".join(repr(cell_set_id) for cell_set_id in self.cell_set_ids)
        super().__init__(
            field,
            f"Unknown cell set(s) {listed}; cell set ids are '<obs column>-<category>' "
            "for every categorical .obs column",
        )


class EmbeddingUnavailableError(AnalysisError):
    """The requested embedding is neither stored nor computable."""

    code = "EMBEDDING_UNAVAILABLE"


class MissingInputFileError(AnalysisError, FileNotFoundError):
    """An input file (e.g. part of a 10x matrix directory) does not exist.

    Attributes
    ----------
    path
        The path that was looked for (for alternatives, the first one).
    """

    code = "MISSING_INPUT_FILE"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class InvalidInputDataError(AnalysisError):
    """Input data exist but are malformed (e.g. a matrix whose shape disagrees with its barcodes)."""

    code = "INVALID_INPUT_DATA"


class NoCellsLeftError(AnalysisError):
    """Quality control or filtering removed every cell (or every gene)."""

    code = "NO_CELLS_LEFT"

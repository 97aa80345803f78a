from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import analyses
from analyses import errors

PACKAGE_DIRECTORY = Path(analyses.__file__).parent
FORBIDDEN_IMPORTS = {"prefect", "prefect_aws", "boto3", "botocore", "moto", "flows", "blocks", "interlinked"}


def test_public_api_is_importable_and_versioned() -> None:
    assert PACKAGE_DIRECTORY.name == "analyses" and (PACKAGE_DIRECTORY / "prepare.py").is_file()
    for name in analyses.__all__:
        assert hasattr(analyses, name), name
    assert isinstance(analyses.ANALYSIS_VERSION, str)
    assert analyses.ANALYSIS_VERSION.count(".") == 2


def test_the_package_imports_nothing_of_ours_nor_prefect_or_aws() -> None:
    for path in sorted(PACKAGE_DIRECTORY.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN_IMPORTS, (
                f"{path.name}:{node.lineno} imports {roots & FORBIDDEN_IMPORTS}"
            )


def test_error_codes_are_stable_and_distinct() -> None:
    classes = [
        errors.AnalysisError,
        errors.InvalidRequestError,
        errors.UnknownCellSetError,
        errors.EmbeddingUnavailableError,
        errors.MissingInputFileError,
        errors.InvalidInputDataError,
        errors.NoCellsLeftError,
    ]
    codes = [cls.code for cls in classes]
    assert codes == [
        "ANALYSIS_ERROR",
        "INVALID_REQUEST",
        "UNKNOWN_CELL_SET",
        "EMBEDDING_UNAVAILABLE",
        "MISSING_INPUT_FILE",
        "INVALID_INPUT_DATA",
        "NO_CELLS_LEFT",
    ]
    assert all(issubclass(cls, errors.AnalysisError) for cls in classes)
    assert issubclass(errors.InvalidRequestError, ValueError)
    assert issubclass(errors.UnknownCellSetError, errors.InvalidRequestError)
    assert issubclass(errors.MissingInputFileError, FileNotFoundError)


def test_errors_serialise_with_their_field() -> None:
    error = errors.UnknownCellSetError(["louvain-99"])
    payload = error.to_dict()
    assert payload["code"] == "UNKNOWN_CELL_SET" and payload["field"] == "cell_sets"
    assert "louvain-99" in payload["message"]
    json.dumps(payload)
    with pytest.raises(FileNotFoundError, match="no matrix"):
        raise errors.MissingInputFileError("/x/matrix.mtx.gz", "no matrix")

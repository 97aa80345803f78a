"""PrepareExperiment reads only allowed sources, and never replaces an experiment unasked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.analysis.sources import source_allowed

DATA = "interlinked-data"


@pytest.mark.parametrize(
    ("bucket", "path", "allowed", "expected"),
    [
        (DATA, "sources/pbmc/", [], True),  # the data bucket always
        ("lab-raw", "pbmc/", [], False),
        ("lab-raw", "pbmc/", ["lab-raw"], True),
        ("lab-raw", "lab1/run/", ["lab-raw/lab1"], True),
        ("lab-raw", "/lab1/run/", ["lab-raw/lab1/"], True),
        ("lab-raw", "lab1", ["lab-raw/lab1/"], True),
        ("lab-raw", "lab10/run/", ["lab-raw/lab1"], False),  # whole segments only
        ("lab-raw", "lab1/../lab2/", ["lab-raw/lab1"], False),
        ("lab-raw", "lab1/./x", ["lab-raw/lab1"], False),
        (DATA, "../other/", [], False),
        ("lab-raw-2", "lab1/", ["lab-raw/lab1"], False),
        ("anything", "x/", ["*"], True),
    ],
)
def test_the_allow_list(bucket, path, allowed, expected):
    assert source_allowed(bucket, path, data_bucket=DATA, allowed=allowed) is expected


segment = st.text(alphabet=st.sampled_from("ab1.%2e/\u2024\uff0e-"), min_size=0, max_size=12)


@given(path=st.lists(segment, min_size=1, max_size=5).map("/".join))
def test_an_allowed_path_never_leaves_its_prefix(path):
    """Whatever the key, an allowed one lies under the prefix segment by segment, with no dot segment."""
    if source_allowed("lab-raw", path, data_bucket=DATA, allowed=["lab-raw/lab1"]):
        segments = path.lstrip("/").split("/")
        assert segments[0] == "lab1" and not {".", ".."} & set(segments)

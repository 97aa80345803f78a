"""Key fragments that try to escape a prefix, shared by the property tests of scoped policies
(``tests/unit/test_submission_scope.py``, ``tests/integration/test_emulator_iam.py``)."""

from __future__ import annotations

from hypothesis import strategies as st

NASTY_FRAGMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E/",
    "//",
    "/",
    "./",
    "\u2215",  # division slash
    "\uff0f",  # fullwidth solidus
    "\u2024\u2024",  # one-dot leaders
    "\u0131",  # dotless i
    "%2f",
    " ",
    "\\",
    "~",
]


def nasty_keys(pieces: list[str], *, max_pieces: int) -> st.SearchStrategy[str]:
    """Keys made of ``pieces`` (legitimate prefixes), :data:`NASTY_FRAGMENTS` and random text."""
    parts = st.one_of(
        st.sampled_from(NASTY_FRAGMENTS), st.sampled_from(pieces), st.text(min_size=1, max_size=6)
    )
    return st.lists(parts, min_size=1, max_size=max_pieces).map("".join)

"""Docs generated from the code (the README's config reference, the resume matrix of
docs/fault-tolerance.md) must stay identical to it."""

from __future__ import annotations

import re
import signal

from tests import resume_cells
from tests.conftest import REPO
from tml.core.config_docs import END_MARKER, START_MARKER, reference
from tml.core.errors import EXIT_FAILURE, EXIT_INPUT_ERROR, EXIT_OK, stop_exit_code
from tml.projects.twhin.config import TwhinConfig


def test_readme_config_reference_matches_the_config_classes() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(re.escape(START_MARKER) + r"\n(.*)" + re.escape(END_MARKER), readme, re.S)
    assert found, "README.md lost its config reference markers"
    assert found.group(1).strip() == reference(TwhinConfig).strip(), (
        "README config reference is stale: run `make docs`"
    )


def test_readme_names_every_make_target_it_documents() -> None:
    makefile = (REPO / "Makefile").read_text()
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"`make ([a-z-]+)", readme):
        assert re.search(rf"^{target}:", makefile, re.M), f"README mentions missing target {target}"


def test_fault_tolerance_doc_holds_the_resume_matrix_of_the_tests() -> None:
    doc = (REPO / "docs" / "fault-tolerance.md").read_text()
    found = re.search(
        re.escape(resume_cells.START_MARKER) + r"\n(.*)" + re.escape(resume_cells.END_MARKER),
        doc,
        re.S,
    )
    assert found, "docs/fault-tolerance.md lost its resume-matrix markers"
    assert found.group(1).strip() == resume_cells.markdown().strip(), (
        "the resume matrix in docs/fault-tolerance.md is stale: run `make docs`"
    )


def test_fault_tolerance_doc_lists_the_exit_codes_of_the_code() -> None:
    doc = (REPO / "docs" / "fault-tolerance.md").read_text()
    table = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| `(\d+)` \|", table, re.M)]
    stops = [stop_exit_code(signal.SIGTERM), stop_exit_code(signal.SIGINT)]
    assert sorted(codes) == sorted([EXIT_OK, EXIT_INPUT_ERROR, EXIT_FAILURE, *stops])
    assert "docs/fault-tolerance.md" in (REPO / "README.md").read_text()

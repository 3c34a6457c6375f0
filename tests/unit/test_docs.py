"""The docs stay true to the code: the generated config reference and resume matrix, the exit
codes, the README's size and links, and every make target and link the docs mention."""

from __future__ import annotations

import re
import signal

from pydantic import BaseModel

from tests import resume_cells
from tests.conftest import REPO
from tml.core.config_docs import END_MARKER, START_MARKER, reference, summary
from tml.core.errors import EXIT_FAILURE, EXIT_INPUT_ERROR, EXIT_OK, stop_exit_code
from tml.projects.twhin.config import TwhinConfig

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_config_reference_matches_the_config_classes() -> None:
    text = (DOCS / "config-reference.md").read_text()
    found = re.search(re.escape(START_MARKER) + r"\n(.*)" + re.escape(END_MARKER), text, re.S)
    assert found, "docs/config-reference.md lost its markers"
    assert found.group(1).strip() == reference(TwhinConfig).strip(), (
        "docs/config-reference.md is stale: run `make docs`"
    )


def test_fault_tolerance_page_holds_the_resume_matrix_of_the_tests() -> None:
    text = (DOCS / "fault-tolerance.md").read_text()
    found = re.search(
        re.escape(resume_cells.START_MARKER) + r"\n(.*)" + re.escape(resume_cells.END_MARKER),
        text,
        re.S,
    )
    assert found, "docs/fault-tolerance.md lost its resume-matrix markers"
    assert found.group(1).strip() == resume_cells.markdown().strip(), (
        "the resume matrix in docs/fault-tolerance.md is stale: run `make docs`"
    )


def test_fault_tolerance_page_lists_the_exit_codes_of_the_code() -> None:
    text = (DOCS / "fault-tolerance.md").read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| `(\d+)` \|", table, re.M)]
    stops = [stop_exit_code(signal.SIGTERM), stop_exit_code(signal.SIGINT)]
    assert sorted(codes) == sorted([EXIT_OK, EXIT_INPUT_ERROR, EXIT_FAILURE, *stops])


def test_a_section_description_keeps_its_whole_first_paragraph() -> None:
    class Section(BaseModel):
        """Ramp to the peak, then decay
        to the floor, then hold.

        Details that stay in the code."""

    assert summary(Section.__doc__) == "Ramp to the peak, then decay to the floor, then hold."
    assert "then hold." in reference(Section)


def test_readme_is_short_and_links_every_docs_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 200, "the README is the five-minute start; move detail to docs/"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", text))
    pages = {page.name for page in DOCS.glob("*.md")}
    assert pages - linked == set(), f"README does not link {sorted(pages - linked)}"


def test_every_relative_link_in_the_docs_resolves() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_name_only_make_targets_that_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for page in PAGES:
        for target in re.findall(r"`make ([a-z0-9-]+)", page.read_text()):
            assert re.search(rf"^{target}:", makefile, re.M), f"{page.name}: no make {target}"

"""The docs stay true to the code: the generated config reference, the README's size and links,
and every make target and link the docs mention."""

from __future__ import annotations

import re

from pydantic import BaseModel

from tests.conftest import REPO
from tml.core.config_docs import END_MARKER, START_MARKER, reference, summary
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
        for target in re.findall(r"`make ([a-z-]+)", page.read_text()):
            assert re.search(rf"^{target}:", makefile, re.M), f"{page.name}: no make {target}"

"""The README's config reference is generated from the code and must stay identical to it."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tml.core.config_docs import END_MARKER, START_MARKER, reference
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

"""Imports only point down: every module of tml/ sits in a layer, and imports only from lower
layers or from its own unit (a folder of tml/projects/twhin, or one command module).

The layer order is declared here and in docs/architecture.md (a test keeps the two equal):
tml/core at the bottom, then the batch contract, data and models side by side, the whole config,
and so on up to the commands. Units of the same layer do not import each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

TML = REPO / "tml"
PROJECT = "tml.projects.twhin"
COMMANDS = (
    "run", "export", "evaluate", "neighbors", "report", "import_kg", "synthetic", "tune",
    "compare",
)  # fmt: skip

LAYERS: list[list[str]] = [
    ["core"],
    ["batch"],
    ["data", "models"],
    ["config"],
    ["parallel", "artifacts"],
    ["eval", "run_report", "tools", "tuning"],
    ["search", "training"],
    ["commands"],
]
"""Bottom to top. "core" is tml/core; "commands" are the top-level command modules of
tml/projects/twhin (each its own unit); every other name is a module or folder of it."""

MAX_LINES = 400


def unit_of(module: str) -> str:
    """The unit a module belongs to: core, a folder of the project, config, or command:<name>."""
    if module == "tml.core" or module.startswith("tml.core."):
        return "core"
    parts = module.removeprefix(PROJECT + ".").split(".")
    if not module.startswith(PROJECT + ".") or not parts[0]:
        raise ValueError(f"{module} is in no layer")
    if parts[0] in COMMANDS:
        return f"command:{parts[0]}"
    return parts[0]


def layer_of(unit: str) -> int:
    name = "commands" if unit.startswith("command:") else unit
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise ValueError(f"unit {unit!r} is in no layer of LAYERS; add it there")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every tml import in a file, at any depth (lazy and TYPE_CHECKING
    imports count too); `from package import module` names the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (REPO / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    REPO / Path(*candidate.split(".")) / "__init__.py"
                ).is_file()
                found.append((node.lineno, candidate if is_module else node.module))
    return [(line, module) for line, module in found if module.split(".")[0] == "tml"]


def violations(edges: list[tuple[str, str]]) -> list[str]:
    """`importer -> imported` edges that point up or sideways between units."""
    problems = []
    for importer, imported in edges:
        if importer in ("tml", "tml.projects", PROJECT) or imported in ("tml", "tml.projects"):
            continue
        source, target = unit_of(importer), unit_of(imported)
        if source == target:
            continue
        if layer_of(target) >= layer_of(source):
            problems.append(
                f"{importer} ({source}, layer {layer_of(source)}) imports {imported} "
                f"({target}, layer {layer_of(target)})"
            )
    return problems


def import_edges() -> list[tuple[str, str]]:
    return [
        (module_name(path), imported)
        for path in sorted(TML.rglob("*.py"))
        for _, imported in imported_modules(path)
    ]


def test_every_import_in_tml_points_down_the_layers() -> None:
    problems = violations(import_edges())
    assert not problems, "imports that point up or sideways:\n" + "\n".join(problems)


def test_the_check_catches_an_upward_and_a_sideways_import() -> None:
    upward = (f"{PROJECT}.data.dataset", f"{PROJECT}.training.trainer")
    sideways = (f"{PROJECT}.models.scorer", f"{PROJECT}.data.files")
    into_core = ("tml.core.metrics", f"{PROJECT}.config")
    between_commands = (f"{PROJECT}.evaluate", f"{PROJECT}.export")
    found = violations([upward, sideways, into_core, between_commands])
    assert len(found) == 4
    assert violations([(f"{PROJECT}.training.trainer", f"{PROJECT}.data.dataset")]) == []


def test_every_unit_of_the_project_is_in_a_layer() -> None:
    modules = {module_name(path) for path in TML.rglob("*.py")}
    for module in modules - {"tml", "tml.projects", PROJECT}:
        layer_of(unit_of(module))  # raises for a folder or module missing from LAYERS


def test_no_file_in_tml_is_longer_than_400_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in TML.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"


def test_docs_declare_the_same_layer_order() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers:start -->\n(.*?)<!-- layers:end -->", text, re.S)
    assert block, "docs/architecture.md lost its layer list"
    declared = [
        [name.strip("` ") for name in line.split("|")[2].split(",")]
        for line in block.group(1).splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    ]
    assert declared == LAYERS[::-1], "docs/architecture.md's layers differ from tests' LAYERS"


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_stay_thin(command: str) -> None:
    """A command parses flags and calls the library; the work lives below it."""
    lines = len((TML / "projects" / "twhin" / f"{command}.py").read_text().splitlines())
    assert lines <= 160, f"{command}.py has {lines} lines; move its logic into a library module"

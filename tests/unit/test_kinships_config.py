"""configs/kinships.yaml is the importer's output for Kinships: the shipped defaults stay in sync."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import REPO
from tml.core.config import load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.tools.import_kg import import_kg

KINSHIPS = REPO / "datasets" / "kinships"


def test_shipped_kinships_config_is_what_the_importer_writes(tmp_path: Path) -> None:
    out = tmp_path / "kinships"
    import_kg(
        str(KINSHIPS / "train.tsv"), str(KINSHIPS / "valid.tsv"), str(KINSHIPS / "test.tsv"),
        out=str(out), operator="complex_diagonal",
    )  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    shipped = yaml.safe_load((REPO / "configs" / "kinships.yaml").read_text())
    for section in ("train_data", "validation_data", "test_data"):
        split = Path(written[section]["data_root"]).name
        assert shipped[section]["data_root"] == f"data/kinships/{split}"
        written[section]["data_root"] = shipped[section]["data_root"]
    assert shipped == written
    load_config(TwhinConfig, REPO / "configs" / "kinships.yaml")

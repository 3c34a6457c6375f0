"""MetricsWriter mirrors its records to TensorBoard event files next to metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tml.core.metrics import MetricsWriter


def test_records_become_tensorboard_scalars(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path / "metrics.jsonl", tmp_path / "tensorboard", enabled=True)
    for step, loss in ((10, 0.5), (20, 0.25)):
        writer.write(
            {"step": step, "epoch": 0, "loss": loss, "lr": {"user": 0.1, "relations": 0.01}}
        )
    writer.write({"step": 20, "split": "validation", "mrr": 0.75, "truncated": True})
    writer.close()

    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == [
        "train/epoch",
        "train/loss",
        "train/lr/relations",
        "train/lr/user",
        "validation/mrr",
    ]
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(10, 0.5), (20, 0.25)]
    assert [e.step for e in events.Scalars("train/lr/user")] == [10, 20]
    assert events.Scalars("train/lr/relations")[0].value == pytest.approx(0.01)
    [mrr] = events.Scalars("validation/mrr")
    assert (mrr.step, mrr.value) == (20, 0.75)
    # The event's wall time is the record's.
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert loss[0].wall_time == pytest.approx(first["time"])


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path / "metrics.jsonl", tmp_path / "tensorboard", enabled=False)
    writer.write({"step": 1, "loss": 1.0})
    writer.close()
    assert list(tmp_path.iterdir()) == []

"""The files of a run: where each lives (RunDir), what trainer_state.json holds (TrainerState),
and outputs that are never half-written (tml/core/files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tml.core.files import atomic_output, write_text_atomically
from tml.projects.twhin.artifacts.checkpoints import table_checkpoint_key
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.training.state import StartPoint, TrainerState


def test_run_dir_keeps_the_layout_that_old_runs_have(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    relative = {
        name: str(getattr(run, name).relative_to(tmp_path))
        for name in ("config", "checkpoints", "metrics", "tensorboard", "profile", "embeddings",
                     "evaluations", "index", "report")
    }  # fmt: skip
    assert relative == {
        "config": "config.yaml", "checkpoints": "checkpoints", "metrics": "metrics.jsonl",
        "tensorboard": "tensorboard", "profile": "profile", "embeddings": "embeddings",
        "evaluations": "eval", "index": "index", "report": "report",
    }  # fmt: skip
    assert run.evaluation("test") == tmp_path / "eval" / "test.json"
    assert run.faiss_index("user", "dot") == tmp_path / "index" / "user.dot.faiss"
    assert run.checkpoint("step_20") == tmp_path / "checkpoints" / "step_20"
    assert run.checkpoint("other/run/step_3") == Path("other/run/step_3")
    assert table_checkpoint_key("user") == "model.tables.embedding_bags.user.weight"


def test_previous_table_shapes_read_only_the_tables_of_an_older_config(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.previous_table_shapes() == {}
    saved = {
        "model": {
            "embeddings": {"tables": [{"name": "user", "num_embeddings": 10,
                                       "embedding_dim": 4, "a_field_of_another_version": 1}]},
            "relations": "not read",
        },
        "retired_section": {"x": 1},
    }  # fmt: skip
    run.config.write_text(yaml.safe_dump(saved))
    assert run.previous_table_shapes() == {"user": (10, 4)}


def test_trainer_state_keeps_the_keys_of_trainer_state_json() -> None:
    state = TrainerState(step=30, epoch=1, step_in_epoch=5, world_size=2,
                         per_replica_batch_size=250, steps_per_epoch=25, seed=0)  # fmt: skip
    written = {**state.to_dict(), "files": {"__0_0.distcp": 123}}  # the manifest, added by core
    assert list(written) == ["step", "epoch", "step_in_epoch", "world_size",
                             "per_replica_batch_size", "steps_per_epoch", "seed", "files"]  # fmt: skip
    assert TrainerState.from_dict(json.loads(json.dumps(written))) == state
    with pytest.raises(ValueError, match="lacks step_in_epoch"):
        TrainerState.from_dict({k: v for k, v in written.items() if k != "step_in_epoch"})


def test_a_resume_on_another_world_size_continues_after_the_edges_consumed() -> None:
    saved = TrainerState(step=30, epoch=1, step_in_epoch=6, world_size=2,
                         per_replica_batch_size=250, steps_per_epoch=25, seed=0)  # fmt: skip
    start = StartPoint.resumed(Path("ckpt"), saved, world_size=1, batch_size=250,
                               steps_per_epoch=50)  # fmt: skip
    assert (start.step, start.epoch, start.step_in_epoch) == (30, 1, 12)
    assert start.position_offset(50) == 50 + 12 - 30
    same = StartPoint.resumed(Path("ckpt"), saved, world_size=2, batch_size=250,
                              steps_per_epoch=25)  # fmt: skip
    assert (same.epoch, same.step_in_epoch) == (1, 6)


def test_a_failed_write_leaves_the_old_file_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_text_atomically(target, "old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as staging:
        staging.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]

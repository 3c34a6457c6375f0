"""`RunDir`: every path of one run's save dir, named in one place.

    <save_dir>/config.yaml            the resolved config (written with the first checkpoint)
    <save_dir>/checkpoints/step_<N>/  DCP checkpoints (tml/core/checkpoint.py)
    <save_dir>/metrics.jsonl          one JSON record per log line, evaluation and checkpoint
    <save_dir>/tensorboard/           the same records as TensorBoard scalars
    <save_dir>/profile/               per-stage step times (runtime.profile_steps)
    <save_dir>/embeddings/            exported tables and relations (artifacts/export.py)
    <save_dir>/eval/<split>.json      results of `evaluate`
    <save_dir>/index/                 faiss indexes of `neighbors`
    <save_dir>/report/                the run report (`report`)

The layout is what runs already on disk have: resuming and exporting old runs depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic
import yaml


@dataclass(frozen=True)
class RunDir:
    """The save dir of one run."""

    root: Path

    @classmethod
    def at(cls, save_dir: str | Path) -> RunDir:
        return cls(Path(save_dir))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def evaluations(self) -> Path:
        return self.root / "eval"

    def evaluation(self, split: str) -> Path:
        return self.evaluations / f"{split}.json"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def faiss_index(self, table: str, comparator: str) -> Path:
        return self.index / f"{table}.{comparator}.faiss"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def checkpoint(self, name: str) -> Path:
        """A checkpoint by folder name (`step_N`), or by path when `name` holds a slash."""
        return Path(name) if "/" in name else self.checkpoints / name

    def previous_table_shapes(self) -> dict[str, tuple[int, int]]:
        """table -> (rows, dim) as the run already in this save dir trained them (empty
        without a config copy). Only the table fields are read: the rest of an older
        version's config need not validate against this one's."""
        if not self.config.is_file():
            return {}
        saved = _SavedConfig.model_validate(yaml.safe_load(self.config.read_text()) or {})
        return {t.name: (t.num_embeddings, t.embedding_dim) for t in saved.model.embeddings.tables}


class _Lenient(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")


class _SavedTable(_Lenient):
    name: str
    num_embeddings: int
    embedding_dim: int


class _SavedEmbeddings(_Lenient):
    tables: list[_SavedTable] = []


class _SavedModel(_Lenient):
    embeddings: _SavedEmbeddings = _SavedEmbeddings()


class _SavedConfig(_Lenient):
    model: _SavedModel = _SavedModel()

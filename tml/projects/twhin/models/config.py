"""The `model` config section: tables, relations and their optimizers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import pydantic

from tml.core.config import PROBLEM_SEPARATOR, BaseConfig, unsupported_field
from tml.core.optimizers import OptimizerConfig
from tml.projects.twhin.batch.layout import GraphShape, first_appearance
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.losses import LOSSES
from tml.projects.twhin.models.operators import OPERATORS


class DataType(StrEnum):
    """Storage type of a table's weights (lookups are always returned as fp32)."""

    FP32 = "fp32"
    FP16 = "fp16"


class ShardingType(StrEnum):
    """TorchRec sharding types tml-twhin can force for a table (all work on CPU and GPU)."""

    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"
    TABLE_COLUMN_WISE = "table_column_wise"


class ComputeKernel(StrEnum):
    """Where a table's rows live on a GPU machine (TorchRec compute kernels)."""

    FUSED = "fused"
    FUSED_UVM_CACHING = "fused_uvm_caching"
    FUSED_UVM = "fused_uvm"


class EmbeddingTableConfig(BaseConfig):
    """One entity type: a TorchRec embedding table with its own fused optimizer."""

    name: str = pydantic.Field(description="Entity type, e.g. user. Relations refer to it.")
    num_embeddings: pydantic.PositiveInt = pydantic.Field(
        description="Rows: entity ids must lie in [0, num_embeddings)."
    )
    embedding_dim: pydantic.PositiveInt = pydantic.Field(description="Columns of the table.")
    data_type: DataType = pydantic.Field(DataType.FP32, description="fp32 or fp16 storage.")
    optimizer: OptimizerConfig = pydantic.Field(
        description="Fused optimizer of this table: sgd, adagrad or rowwise_adagrad (adam on "
        "CUDA only), with an optional learning_rate schedule."
    )
    init_std: pydantic.PositiveFloat | None = pydantic.Field(
        None,
        description="Standard deviation of the normal initialisation. Default 1/sqrt(dim), so "
        "initial scores are O(1) and the first gradients are not vanishingly small.",
    )
    sharding_type: ShardingType | None = pydantic.Field(
        None, description="Force a TorchRec sharding type; default lets the planner choose."
    )
    compute_kernel: ComputeKernel = pydantic.Field(
        ComputeKernel.FUSED,
        description="fused: rows in GPU memory (HBM), the fastest. For tables larger than the "
        "GPUs' memory: fused_uvm_caching keeps the rows in host memory (UVM) with a cache of "
        "the hot rows in HBM (sized by cache_load_factor), fast for skewed, power-law ids; "
        "fused_uvm reads every row from host memory (slower, no HBM used). CUDA only: on CPU "
        "tables already live in host memory.",
    )
    cache_load_factor: float | None = pydantic.Field(
        None,
        gt=0,
        le=1,
        description="With fused_uvm_caching: share of the table's rows cached in HBM "
        "(TorchRec's default 0.2 when unset).",
    )
    pretrained: dict | None = unsupported_field(
        "torchsnapshot tables; warm start with training.initial_checkpoint_dir"
    )
    vocab: str | None = unsupported_field(
        "id mapping; lhs/rhs in the data must already be table row indices"
    )

    @pydantic.model_validator(mode="after")
    def _cache_needs_caching_kernel(self) -> EmbeddingTableConfig:
        if self.cache_load_factor is not None and self.compute_kernel is not (
            ComputeKernel.FUSED_UVM_CACHING
        ):
            raise ValueError(
                "cache_load_factor: only used with compute_kernel: fused_uvm_caching "
                f"(this table's is {self.compute_kernel.value})"
            )
        return self

    @property
    def effective_init_std(self) -> float:
        return self.init_std if self.init_std is not None else self.embedding_dim**-0.5


class EmbeddingsConfig(BaseConfig):
    """All entity tables."""

    tables: list[EmbeddingTableConfig] = pydantic.Field(
        min_length=1, description="One table per entity type; names must be unique."
    )
    tables_to_log: list[str] | None = unsupported_field(
        "per-table logging; metrics.jsonl holds the training statistics"
    )

    @pydantic.field_validator("tables")
    @classmethod
    def _unique_names(cls, tables: list[EmbeddingTableConfig]) -> list[EmbeddingTableConfig]:
        names = [table.name for table in tables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"table names must be unique; repeated: {', '.join(duplicates)}")
        return tables


class RelationConfig(BaseConfig):
    """An edge type: lhs table --name--> rhs table, scored through an operator."""

    name: str = pydantic.Field(description="Relation name, e.g. fav.")
    lhs: str = pydantic.Field(description="Table of the edge's source entity.")
    rhs: str = pydantic.Field(description="Table of the edge's target entity.")
    operator: Annotated[str, pydantic.AfterValidator(OPERATORS.check)] = pydantic.Field(
        "translation",
        description="Transformation of the lhs embedding before the dot product with rhs. "
        f"One of: {', '.join(OPERATORS)}.",
    )


class TwhinModelConfig(BaseConfig):
    """Tables, relations, the relation operators' optimizer and the loss."""

    embeddings: EmbeddingsConfig = pydantic.Field(description="Entity tables.")
    relations: list[RelationConfig] = pydantic.Field(
        min_length=1, description="Edge types; the data's `rel` column indexes this list."
    )
    translation_optimizer: OptimizerConfig = pydantic.Field(
        description="Optimizer (and schedule) of the relation operators' parameters."
    )
    comparator: Annotated[str, pydantic.AfterValidator(COMPARATORS.check)] = pydantic.Field(
        "dot",
        description="How op(lhs) and rhs embeddings become a score: "
        f"{', '.join(COMPARATORS)} (dot is TwHIN's; l1 and l2 are TransE's negative distances).",
    )
    loss: Annotated[str, pydantic.AfterValidator(LOSSES.check)] = pydantic.Field(
        "logistic",
        description=f"Loss over each positive's and its negatives' scores: {', '.join(LOSSES)} "
        "(logistic is TwHIN's, softmax PBG's, ranking a margin loss).",
    )
    reciprocal_relations: bool = pydantic.Field(
        False,
        description="Give each relation a second, reverse operator used whenever the lhs is "
        "predicted (lhs-corrupted negatives in training, head ranking in evaluation), as "
        "PyTorch-BigGraph does. Lifts symmetric operators (diagonal) on directed graphs.",
    )
    regularization: pydantic.NonNegativeFloat = pydantic.Field(
        0.0,
        description="Weight of an N3 penalty (sum of |x|^3) on the embeddings of each positive "
        "edge, added to the loss. It curbs overfitting on small, dense graphs (it lifted "
        "Kinships' validation MRR); 0 turns it off.",
    )
    margin: pydantic.NonNegativeFloat = pydantic.Field(
        0.1, description="Margin of the ranking loss (ignored by the other losses)."
    )
    compile: bool = pydantic.Field(
        False,
        description="Compile the scorer's per-group scoring and loss, forward and backward, with "
        "torch.compile (inductor): one graph per relation, compiled in the first steps and "
        "cached under TORCHINDUCTOR_CACHE_DIR (default ~/.cache/tml-twhin/inductor); a failure "
        "to compile is a warning and training goes on eagerly. docs/throughput.md has its "
        "measured cost and gain.",
    )

    @pydantic.model_validator(mode="after")
    def _relations_fit_tables(self) -> TwhinModelConfig:
        tables = {table.name: table for table in self.embeddings.tables}
        problems = []
        names = [relation.name for relation in self.relations]
        for index, relation in enumerate(self.relations):
            where = f"relations[{index}]"
            if names.count(relation.name) > 1:
                problems.append(f"{where}.name: relation {relation.name!r} is defined twice")
            for side in ("lhs", "rhs"):
                table = getattr(relation, side)
                if table not in tables:
                    problems.append(
                        f"{where}.{side}: no table named {table!r} (tables: {', '.join(tables)})"
                    )
            if relation.lhs in tables and relation.rhs in tables:
                lhs_dim = tables[relation.lhs].embedding_dim
                rhs_dim = tables[relation.rhs].embedding_dim
                problem = OPERATORS[relation.operator].dimension_problem(lhs_dim, rhs_dim)
                if problem:
                    problems.append(f"{where}.operator: {problem}")
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return self

    def scoring_groups(self) -> tuple[int, ...]:
        """The group of each relation: relations of one operator kind between the same tables
        are scored together, with stacked parameters (numbered by first appearance)."""
        return first_appearance([(r.operator, r.lhs, r.rhs) for r in self.relations])

    def graph_shape(self) -> GraphShape:
        """The tables (in this order, the batches' lookup keys) and relations a batch holds."""
        names = [table.name for table in self.embeddings.tables]
        return GraphShape(
            table_names=tuple(names),
            table_sizes=tuple(table.num_embeddings for table in self.embeddings.tables),
            relation_tables=tuple((names.index(r.lhs), names.index(r.rhs)) for r in self.relations),
            relation_groups=self.scoring_groups(),
        )

"""docs/scaling.md's "What to configure": for each cluster size, the faster of the planner's own
plan and table-row-wise on every table, as the config fields that get it."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.scaling.assumptions import FP32, Cluster, Workload
from benchmarks.scaling.costs import Costs
from benchmarks.scaling.markdown import duration, markdown_table, size
from benchmarks.scaling.planner import PlanOutcome
from benchmarks.scaling.ranking import ranking_cost
from benchmarks.scaling.report import ClusterReport, edges_per_second
from tml.core.training_config import TrainingConfig

EVAL_TIMEOUT_S = TrainingConfig.model_fields["eval_timeout_in_s"].default


@dataclass(frozen=True)
class Advice:
    """The config that gets the faster plan on one cluster size, and what it gives."""

    world_size: int
    outcome: PlanOutcome
    costs: Costs
    forced: bool  # sharding_type: table_row_wise on every table

    def table_fields(self, work: Workload) -> dict[str, dict[str, object]]:
        """table -> the fields its config sets beyond name, size, dim and optimizer."""
        assert self.outcome.placement is not None
        plans = {t.table: t for t in self.outcome.placement.tables}
        fields: dict[str, dict[str, object]] = {}
        for table in work.tables:
            mine: dict[str, object] = {}
            if self.forced:
                mine["sharding_type"] = "table_row_wise"
            if plans[table.name].cached:
                mine["compute_kernel"] = "fused_uvm_caching"
                mine["cache_load_factor"] = plans[table.name].cache_load_factor
            if mine:
                fields[table.name] = mine
        return fields


def advice(work: Workload, report: ClusterReport) -> Advice | None:
    """The faster of the two plans (the planner's own on a tie: no field to set)."""
    options = [(report.outcome, report.costs, False)]
    options.append((report.table_row_wise, report.table_row_wise_costs, True))
    planned = [(o, c, f) for o, c, f in options if c is not None]
    if not planned:
        return None
    outcome, costs, forced = max(
        planned, key=lambda p: (round(edges_per_second(work, report.world_size, p[1])), not p[2])
    )
    return Advice(report.world_size, outcome, costs, forced)


def _fields_cell(fields: dict[str, dict[str, object]], forced: bool) -> str:
    """The fields in words: the sharding type once for every table, then each table's own."""
    parts = ["every table: `sharding_type: table_row_wise`"] if forced else []
    for table, values in fields.items():
        own = [f"`{k}: {v}`" for k, v in values.items() if k != "sharding_type"]
        if own:
            parts.append(f"{table}: " + ", ".join(own))
    return "; ".join(parts) or "nothing: the planner's defaults"


def _yaml(work: Workload, fields: dict[str, dict[str, object]]) -> str:
    lines = ["```yaml", "model:", "  embeddings:", "    tables:"]
    for table in work.tables:
        lines += [f"      - name: {table.name}", f"        num_embeddings: {table.rows}",
                  f"        embedding_dim: {table.dim}",
                  "        optimizer: {rowwise_adagrad: {lr: 0.1}}"]  # fmt: skip
        lines += [f"        {key}: {value}" for key, value in fields.get(table.name, {}).items()]
    return "\n".join(lines + ["```"])


def configure_section(work: Workload, cluster: Cluster, reports: list[ClusterReport]) -> str:
    """The config fields per cluster size, what they give, and the evaluation's settings."""
    rows: list[list[str]] = []
    example: tuple[int, dict[str, dict[str, object]]] | None = None
    for report in reports:
        best = advice(work, report)
        if best is None:
            rows.append([str(report.world_size), "no plan fits", "", "", ""])
            continue
        assert best.outcome.placement is not None
        fields = best.table_fields(work)
        if fields and example is None:
            example = (best.world_size, fields)
        ranking = ranking_cost(best.outcome.placement, work, cluster)
        host = max(
            sum(t.rows_on(r) * work.table(t.table).dim * FP32 for t in
                best.outcome.placement.tables if t.cached)
            for r in best.outcome.placement.holders
        )  # fmt: skip
        rows.append(
            [str(best.world_size), _fields_cell(fields, best.forced),
             f"{edges_per_second(work, best.world_size, best.costs) / 1e6:,.1f} M",
             duration(ranking.seconds * 1e4 / work.eval_queries), size(host) if host else "none"]
        )  # fmt: skip
    header = ["GPUs", "table fields to set", "positive edges/s", "ranking, per 10,000 edges"]
    header += ["host memory per GPU for UVM rows"]
    shown = ""
    if example is not None:
        shown = f"\n\nFor {example[0]} GPUs, the tables of the config:\n\n{_yaml(work, example[1])}"
    return f"""## What to configure

The faster of the planner's own plan and table-row-wise on every table, per cluster size, with the
training settings of "The workload" (`configs/bench.yaml`'s batch and negatives). The trainer gives
the planner the GPUs' memory and its lookups per step itself; a config sets only these table
fields (`model.embeddings.tables[]`, docs/model.md):

{markdown_table(header, rows)}{shown}

Evaluation during training ranks `training.num_eval_steps` × `per_replica_batch_size` × GPUs
validation edges, every `training.eval_log_every_n` steps, cut off after
`training.eval_timeout_in_s` (default {duration(EVAL_TIMEOUT_S)}): at this size set `num_eval_steps` to a few steps
(1 step on 8 GPUs ranks {work.batch_size * 8:,} edges) and keep the full ranking for `evaluate`
after training. The container needs the host memory of the UVM rows on top of the process's
own."""

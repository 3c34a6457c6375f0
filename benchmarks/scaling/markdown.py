"""Numbers, sizes and tables as docs/scaling.md writes them."""

from __future__ import annotations

import re
import textwrap

from benchmarks.scaling.assumptions import Cluster, Workload
from benchmarks.scaling.costs import Costs, TablePlan
from benchmarks.scaling.planner import PlanOutcome
from benchmarks.scaling.report import edges_per_second


def gb(n: float) -> str:
    """Bytes as GB (10^9), two decimals below 10 GB."""
    return f"{n / 1e9:,.2f} GB" if n < 10e9 else f"{n / 1e9:,.1f} GB"


def size(n: float) -> str:
    """Bytes as MB or GB."""
    if n == 0:
        return "0"
    return gb(n) if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def ms(seconds: float) -> str:
    """Seconds as milliseconds."""
    return f"{seconds * 1e3:,.2f} ms" if seconds < 1e-3 else f"{seconds * 1e3:,.1f} ms"


def duration(seconds: float) -> str:
    """Seconds as s, min or h."""
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def host_count(world_size: int, cluster: Cluster) -> str:
    """ "1 host", "8 hosts"."""
    hosts = cluster.hosts(world_size)
    return f"{hosts} host" + ("s" if hosts > 1 else "")


def where_cell(table: TablePlan, cluster: Cluster) -> str:
    """Where a table lives, in words: sharding, GPUs or host, UVM cache."""
    ranks = table.ranks
    kind = table.sharding_type.replace("_", "-")
    if table.sharding_type == "table_row_wise":
        where = f"{kind}, host {ranks[0] // cluster.gpus_per_host} (GPUs {ranks[0]}–{ranks[-1]})"
    elif len(ranks) == 1:
        where = f"{kind}, GPU {ranks[0]}"
    else:
        where = f"{kind}, {len(ranks)} GPUs"
    if table.cached:
        where += f", UVM cache {table.cache_load_factor:.2f}"
    return where


def plan_cells(outcome: PlanOutcome, work: Workload, cluster: Cluster) -> list[str]:
    """One `where_cell` per table, in the workload's table order."""
    if outcome.placement is None:
        return ["no plan"] * len(work.tables)
    tables = {table.table: table for table in outcome.placement.tables}
    return [where_cell(tables[table.name], cluster) for table in work.tables]


def plans_table(
    work: Workload, cluster: Cluster, plans: list[tuple[PlanOutcome, Costs | None]]
) -> str:
    """One row per cluster size: where each table lives, then memory, bytes, step and speed."""
    rows = []
    for outcome, costs in plans:
        cells = [str(outcome.world_size), *plan_cells(outcome, work, cluster)]
        if costs is None:
            rows.append(cells + ["no plan"] * 5)
            continue
        edges = edges_per_second(work, outcome.world_size, costs)
        rows.append(
            cells
            + [
                f"{gb(costs.memory.hbm)} / {gb(costs.memory.planner_hbm)}",
                size(costs.bytes_per_step),
                ms(costs.step.seconds),
                f"{edges / 1e6:,.1f} M",
                duration(work.edges / edges),
            ]
        )
    header = ["GPUs", *(table.name for table in work.tables)]
    header += ["HBM per GPU, ours / planner", "all-to-all bytes per GPU and step"]
    header += ["step", "positive edges/s", "one epoch"]
    return markdown_table(header, rows)


def reflow(markdown: str, width: int = 100) -> str:
    """Rewrap prose paragraphs and list items to `width` (tables, headings, comments and code
    blocks stay)."""

    def fill(text: str, first: str = "", rest: str = "") -> str:
        return textwrap.fill(
            " ".join(text.split()), width, initial_indent=first, subsequent_indent=rest,
            break_long_words=False, break_on_hyphens=False,
        )  # fmt: skip

    blocks = []
    for block in markdown.split("\n\n"):
        if block.startswith(("|", "#", "<!--", "```")):
            blocks.append(block)
        elif block.startswith("- "):
            items = re.split(r"\n(?=- )", block)
            blocks.append("\n".join(fill(item[2:], "- ", "  ") for item in items))
        else:
            blocks.append(fill(block))
    return "\n\n".join(blocks)

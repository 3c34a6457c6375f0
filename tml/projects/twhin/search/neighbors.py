"""Nearest neighbours of entities by their exported embeddings (see the `neighbors` command).

Without a relation: the most similar rows of the same table by cosine similarity. With a relation
R: the best candidates by the trained score, comparator(op_R(e_lhs), e_rhs), for a query on either
side (with reciprocal relations, rev_R(query) against the lhs table). The query itself is never
its own neighbour. Exact search or a faiss index (backends.py). The exported tables are read
lazily (artifacts/exported_table.py): never whole, whatever their size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tml.core.config import load_config
from tml.projects.twhin.artifacts.embedding_files import relation_scorer
from tml.projects.twhin.artifacts.exported_table import open_table
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.search.backends import cached_index, exact_search

Operator = Callable[[torch.Tensor], torch.Tensor]
LARGE_TABLE_ROWS = 1_000_000
INDEX_CHOICES = ("auto", "exact", "faiss")


@dataclass
class SearchPlan:
    """What is compared with what: the query side, the candidates and how they are scored."""

    target: str  # table the neighbours come from
    comparator: str
    description: str
    query_operator: Operator | None = None  # applied to the query embeddings
    candidate_operator: Operator | None = None  # applied to every candidate


def plan_search(
    config: TwhinConfig, table: str, relation: str | None, target: str | None, embeddings: Path
) -> SearchPlan:
    """Check the table/relation/target combination and say how to score it."""
    tables = [t.name for t in config.model.embeddings.tables]
    for name, flag in ((table, "--table"), (target, "--target")):
        if name is not None and name not in tables:
            raise ValueError(f"{flag} {name!r} is not a table of this run ({', '.join(tables)})")
    if relation is None:
        if target not in (None, table):
            raise ValueError("--target needs --relation; without one, neighbours are searched "
                             "within --table")  # fmt: skip
        return SearchPlan(table, "cos", f"cosine similarity within {table}")
    relations = [r.name for r in config.model.relations]
    if relation not in relations:
        raise ValueError(f"--relation {relation!r} is not one of {', '.join(relations)}")
    index = relations.index(relation)
    spec = config.model.relations[index]
    scorer = relation_scorer(config, embeddings)
    comparator = config.model.comparator
    how = f"{spec.operator} operator, {comparator} comparator"
    if table == spec.lhs and target in (None, spec.rhs):
        return SearchPlan(spec.rhs, comparator, f"{relation}: {table} -> {spec.rhs} ({how})",
                          query_operator=scorer.operator(index))  # fmt: skip
    if table == spec.rhs and target in (None, spec.lhs):
        description = f"{relation}: {spec.lhs} -> {table}, predicting the {spec.lhs} ({how})"
        reverse = scorer.reverse_operator(index)
        if reverse is not None:
            return SearchPlan(spec.lhs, comparator, description, query_operator=reverse)
        return SearchPlan(spec.lhs, comparator, description,
                          candidate_operator=scorer.operator(index))  # fmt: skip
    raise ValueError(
        f"relation {relation!r} joins {spec.lhs} -> {spec.rhs}: --table must be one of them "
        f"and --target, if given, the other (got --table {table}, --target {target})"
    )


def choose_backend(index: str, plan: SearchPlan, rows: int) -> str:
    """exact or faiss; faiss indexes candidates as stored, so it cannot transform them."""
    if index == "faiss" and plan.candidate_operator is not None:
        raise ValueError(
            "faiss searches the target rows as stored, but scoring the lhs of a relation "
            "without reciprocal relations transforms every candidate; use --index exact"
        )
    if index == "auto":
        large = rows >= LARGE_TABLE_ROWS and plan.candidate_operator is None
        return "faiss" if large else "exact"
    return index


def find_neighbors(
    save_dir: str | Path,
    table: str,
    queries: list[str],
    *,
    relation: str | None = None,
    target: str | None = None,
    k: int = 10,
    index: str = "auto",
    nprobe: int | None = None,
    nlist: int | None = None,
) -> dict[str, Any]:
    """The k best neighbours of each query, as a JSON-ready dict (see `--json`)."""
    run = RunDir.at(save_dir)
    config = load_config(TwhinConfig, run.config)
    embeddings = run.embeddings
    plan = plan_search(config, table, relation, target, embeddings)
    source = open_table(embeddings, table)  # read lazily: windows, rows and names as needed
    candidates = source if plan.target == table else open_table(embeddings, plan.target)
    rows = torch.tensor([source.find(query) for query in queries])
    with torch.no_grad():
        vectors = torch.from_numpy(source.rows(rows.numpy()))
        if plan.query_operator is not None:
            vectors = plan.query_operator(vectors)
    exclude = rows if plan.target == table else None
    backend = choose_backend(index, plan, candidates.num_rows)
    if backend == "exact":
        scores, found = exact_search(vectors, candidates, plan.comparator, k,
                                     plan.candidate_operator, exclude)  # fmt: skip
        used = "exact"
    else:
        faiss_index, path, built = cached_index(run, candidates, plan.comparator, nlist)
        # One extra, in case the query itself comes back and is dropped.
        scores, found = faiss_index.search(vectors.numpy(), k + 1, nprobe)
        used = f"faiss {path} ({'built now' if built else 'reused'}, nlist {faiss_index.nlist})"
    results = []
    query_names = source.names_of(rows.tolist())
    for position, row in enumerate(rows.tolist()):
        keep = (found[position] >= 0) & np.isfinite(scores[position])
        if exclude is not None:
            keep &= found[position] != row
        hits = found[position][keep][:k].tolist()
        neighbors = [
            {"rank": rank, "id": hit, "name": name, "score": float(score)}
            for rank, (hit, name, score) in enumerate(
                zip(hits, candidates.names_of(hits), scores[position][keep][:k], strict=True), 1
            )
        ]
        query = {"id": row, "name": query_names[position]}
        results.append({"query": query, "neighbors": neighbors})
    return {"table": table, "target": plan.target, "scoring": plan.description,
            "search": used, "results": results}  # fmt: skip


def format_text(result: dict[str, Any]) -> str:
    """Human-readable: one block per query, a line per neighbour."""
    lines = []
    for entry in result["results"]:
        query = entry["query"]
        named = f" {query['name']!r}" if query["name"] is not None else ""
        lines.append(
            f"{result['table']}{named} (id {query['id']}): {len(entry['neighbors'])} best "
            f"{result['target']} by {result['scoring']} [{result['search']}]"
        )
        named_rows = any(n["name"] is not None for n in entry["neighbors"])
        width = max([len(str(n["name"])) for n in entry["neighbors"]] + [4])
        lines.append(f"  {'rank':>4}  {'id':>9}  " + (f"{'name':<{width}}  " if named_rows else "")
                     + "score")  # fmt: skip
        for n in entry["neighbors"]:
            name = f"{n['name'] or '-':<{width}}  " if named_rows else ""
            lines.append(f"  {n['rank']:>4}  {n['id']:>9}  {name}{n['score']:.4f}")
    return "\n".join(lines)

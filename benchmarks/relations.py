"""Relations benchmark: training edges/s as a knowledge graph's number of relations grows.

    python benchmarks/relations.py [--relations 4 100 1000] [--entities 20000] [--edges 300000]
        [--repeat 1] [--baseline CHECKOUT] [--data DIR] [--out DIR] [--padding]

What a new user does with a knowledge graph: a random graph (uniform heads, tails and relations)
written as TSV, imported with `import_kg --operator complex_diagonal` and its default training
settings, trained for one epoch on one rank. The figure is edges/s over the training loop
(`loop_s` of metrics.jsonl: no start, checkpoint or export), for each number of relations and
relative to the first (fewest relations, same number of edges).

`--baseline` also times another checkout of this repository (e.g. `git worktree add /tmp/base
main`), with the same interpreter and the same data, alternating with this one run by run, so
one command gives the before/after table at the same machine load.

`--padding` instead measures the scorer alone (forward and backward, CPU ms per step, one
thread) with in-batch negatives (10,000 positives, chunks of 51, 50 uniform negatives per chunk,
ComplEx), where relations leave chunks of many widths: the batch's buckets of exact widths
against a lower bound for padding every chunk to 51 or to the widest chunk (the same scorer fed
counts rounded up to whole chunks of that width: the rows padding would add, without the gathers
and masks it would also need).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tml.projects.twhin.batch.layout import SlotLayout  # noqa: E402
from tml.projects.twhin.models.config import TwhinModelConfig  # noqa: E402
from tml.projects.twhin.models.scorer import EdgeScorer  # noqa: E402

RUN_PY = Path("tml") / "projects" / "twhin" / "run.py"
NEVER = 10**9


def write_graph(path: Path, entities: int, edges: int, relations: int, seed: int = 0) -> None:
    """`edges` triples `e<i>\\tr<j>\\te<k>` with uniform heads, relations and tails."""
    rng = np.random.default_rng(seed)
    heads, tails = rng.integers(0, entities, (2, edges))
    kinds = rng.integers(0, relations, edges)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.writelines(f"e{h}\tr{r}\te{t}\n" for h, r, t in zip(heads, kinds, tails, strict=True))


def imported_graph(data: Path, entities: int, edges: int, relations: int) -> Path:
    """The imported graph's directory, written on first use."""
    directory = data / f"{entities}x{edges}x{relations}"
    if not (directory / "kg" / "config.yaml").is_file():
        print(f"generating {directory} ...", file=sys.stderr, flush=True)
        write_graph(directory / "train.tsv", entities, edges, relations)
        subprocess.run(
            [sys.executable, "-m", "tml.projects.twhin.import_kg", "--train",
             str(directory / "train.tsv"), "--out", str(directory / "kg"),
             "--operator", "complex_diagonal", "--overwrite"],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return directory / "kg"


def one_epoch_config(graph: Path) -> dict[str, Any]:
    """The importer's config, cut to one epoch without validation, ranking or checkpoints."""
    config = yaml.safe_load((graph / "config.yaml").read_text())
    config["training"].update(
        num_epochs=1, num_train_steps=NEVER, checkpoint_every_n=NEVER, eval_log_every_n=NEVER,
        num_eval_steps=0,
    )  # fmt: skip
    config["evaluation"] = {**config.get("evaluation", {}), "ranking": False}
    return config


def train_once(checkout: Path, config: dict[str, Any], save_dir: Path) -> dict[str, Any]:
    """One epoch with `checkout`'s code on one rank; its loop time and edges/s."""
    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(parents=True)
    config_path = save_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # The checkout's own `tml` comes first on the path, ahead of this venv's editable install.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(checkout))
    env.pop("OMP_NUM_THREADS", None)  # the trainer picks its threads
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "1", str(checkout / RUN_PY), f"--config_yaml_path={config_path}",
               f"--save_dir={save_dir / 'run'}"]  # fmt: skip
    load = os.getloadavg()[0]
    with open(save_dir / "train.log", "w") as log:
        subprocess.run(command, check=True, cwd=checkout, env=env, stdout=log,
                       stderr=subprocess.STDOUT)  # fmt: skip
    records = [json.loads(line) for line in open(save_dir / "run" / "metrics.jsonl")]
    last = [r for r in records if r.get("split", "train") == "train"][-1]
    return {"loop_s": last["loop_s"], "final_loss": last["loss"], "load_avg_1m": load}


def scorer_cpu_ms(relations: int, counts: np.ndarray, steps: int = 10) -> float:
    """CPU ms per forward and backward of the scorer on one batch with `counts` positives per
    relation (in-batch 50, 50 uniform per chunk, ComplEx with reciprocal relations, dim 64)."""
    sgd = {"sgd": {"lr": 0.1}}
    config = TwhinModelConfig.model_validate({
        "embeddings": {"tables": [{"name": "entity", "num_embeddings": 1000,
                                   "embedding_dim": 64, "optimizer": sgd}]},
        "relations": [{"name": f"r{r}", "lhs": "entity", "rhs": "entity",
                       "operator": "complex_diagonal"} for r in range(relations)],
        "translation_optimizer": sgd, "loss": "softmax", "reciprocal_relations": True,
    })  # fmt: skip
    size = int(counts.sum())
    layout = SlotLayout(config.graph_shape(), size, 50, 50, global_negatives_per_chunk=True)
    relation = np.repeat(np.arange(relations), counts)
    order, per_relation = layout.row_order(relation)
    batch = SimpleNamespace(relation=torch.from_numpy(relation[order]), weight=torch.ones(size),
                            pieces=layout.pieces(per_relation), layout=layout)  # fmt: skip
    values = (torch.randn(layout.num_slots, 64) / 8).requires_grad_()
    looked_up = SimpleNamespace(values=lambda: values, keys=lambda: ["entity"])
    scorer = EdgeScorer(config)
    started = 0.0
    for step in range(steps + 2):  # 2 warm-up steps
        if step == 2:
            started = time.process_time()
        values.grad = None
        scorer(looked_up, batch)[0].backward()
    return (time.process_time() - started) * 1000 / steps


def padding_table(relations: list[int], repeat: int, batch: int = 10_000, width: int = 51) -> str:
    """Scorer CPU ms: exact-width buckets against padding lower bounds (see the docstring)."""
    torch.set_num_threads(1)
    lines = ["| relations | buckets of exact widths | padded to 51 (lower bound) | padded to "
             "the widest chunk (lower bound) |", "|---|---|---|---|"]  # fmt: skip
    for count in relations:
        counts = np.bincount(np.random.default_rng(0).integers(0, count, batch), minlength=count)
        widest = min(width, int(counts.max()))
        cells = []
        for chunk in (None, width, widest):
            fed = counts if chunk is None else -(-counts // chunk) * chunk
            ms = statistics.median(scorer_cpu_ms(count, fed) for _ in range(repeat))
            cells.append(f"{ms:.1f} ms ({int(fed.sum()):,} rows)")
        lines.append(f"| {count:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]], relations: list[int], codes: list[str]) -> str:
    """Median edges/s per code and number of relations, and each relative to the fewest."""
    median = {
        (code, count): statistics.median(
            r["edges_per_s"] for r in rows if r["code"] == code and r["relations"] == count
        )
        for code in codes
        for count in relations
    }
    header = "| relations | " + " | ".join(f"{c} edges/s | {c} × {relations[0]}" for c in codes)
    lines = [header + " |", "|---" * (1 + 2 * len(codes)) + "|"]
    for count in relations:
        cells = [
            f"{median[code, count]:,.0f} | {median[code, count] / median[code, relations[0]]:.2f}"
            for code in codes
        ]
        lines.append(f"| {count:,} | " + " | ".join(cells) + " |")
    loads = [r["load_avg_1m"] for r in rows]
    lines.append(f"\nload average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", type=int, nargs="+", default=[4, 100, 1000])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--edges", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per point (median)")
    parser.add_argument("--baseline", type=Path, help="another checkout to time alongside")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "relations")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "relations")
    parser.add_argument("--padding", action="store_true", help="the scorer alone: buckets of "
                        "exact widths against padding every chunk (see above)")  # fmt: skip
    args = parser.parse_args()
    if args.padding:
        print(padding_table(args.relations, args.repeat))
        return 0

    checkouts = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    graphs = {n: imported_graph(args.data, args.entities, args.edges, n) for n in args.relations}
    rows = []
    for repeat in range(args.repeat):
        for count in args.relations:
            for code, checkout in checkouts.items():
                save_dir = args.out / f"{code}-{count}-run{repeat}"
                run = train_once(checkout, one_epoch_config(graphs[count]), save_dir)
                row = {"code": code, "relations": count, "run": repeat, "edges": args.edges,
                       "edges_per_s": args.edges / run["loop_s"], **run}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    print()
    print(f"{args.entities:,} entities, {args.edges:,} edges, import_kg defaults "
          f"(complex_diagonal), one epoch, one rank; medians of {args.repeat}")  # fmt: skip
    print(table(rows, args.relations, list(checkouts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

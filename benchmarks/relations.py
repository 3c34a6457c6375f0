"""Relations benchmark: training edges/s as a knowledge graph's number of relations grows.

    python benchmarks/relations.py [--relations 4 100 1000] [--entities 20000] [--edges 300000]
        [--repeat 1] [--baseline CHECKOUT] [--data DIR] [--out DIR]

What a new user does with a knowledge graph: a random graph (uniform heads, tails and relations)
written as TSV, imported with `import_kg --operator complex_diagonal` and its default training
settings, trained for one epoch on one rank. The figure is edges/s over the training loop
(`loop_s` of metrics.jsonl: no start, checkpoint or export), for each number of relations and
relative to the first (fewest relations, same number of edges).

`--baseline` also times another checkout of this repository (e.g. `git worktree add /tmp/base
main`), with the same interpreter and the same data, alternating with this one run by run, so
one command gives the before/after table at the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
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
    args = parser.parse_args()

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

"""Graph versions: warm start onto a grown graph against training it from scratch.

    python benchmarks/graph_versions.py [--out runs/bench-versions] [--epochs 5] [--nproc 1]

v1 is the synthetic graph (test size, 10 communities); v2 = v1 + 10 % new users, tweets and
advertisers and their edges (`synthetic --grow-from --new-fraction 0.1`). Five runs, each
through the real command (`run.py`, one thread per rank), the same steps and cadences:

* v1 from scratch (seed 0);
* v2 from scratch with another seed (seed 1);
* v2 warm-started from v1's final checkpoint, new rows `neighbor_mean`;
* v2 warm-started, new rows `random` (what neighbor_mean is measured against);
* v2 warm-started, new rows `neighbor_mean`, `warm_start.anchor: 0.1`.

Printed (and written to OUT/results.json), with `cat /proc/loadavg`:

* (a) the validation MRR of v2 from scratch at its last step, and the first evaluated step at
  which each warm start reaches it, as a fraction of the steps (OUT/mrr.png plots the curves);
* (b) neighbour overlap@10 of the old users, v1 -> warm v2 and v1 -> scratch v2 (`compare`);
* (c) recall@10 of the planted community among each user's 10 nearest users, for the old and
  the new users of each v2 run after the same training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tml.projects.twhin.eval.drift import compare_exports, nearest  # noqa: E402
from tml.projects.twhin.tools import synthetic  # noqa: E402

RUN_PY = REPO / "tml" / "projects" / "twhin" / "run.py"
GRAPH = dict(
    num_users=2000, num_tweets=3000, num_advertisers=100, num_edges=60_000,
    num_communities=10, rows_per_file=20_000, row_group_size=5_000, validation_fraction=0.1,
)  # fmt: skip
"""The test-sized synthetic graph, with 10 % of the edges held out: 6,000 validation edges keep
the MRR's sampling error near 0.004 (1,200 would leave it near 0.01, more than the differences
measured here)."""
ANCHOR = 0.1
BATCH = 500
WARM_RUNS = (  # (name, warm_start.new_rows, warm_start.anchor)
    ("warm-neighbor_mean", "neighbor_mean", 0.0),
    ("warm-random", "random", 0.0),
    ("warm-neighbor_mean-anchor", "neighbor_mean", ANCHOR),
)


def config_for(graph: Path, out: Path, epochs: int, steps_per_eval: int) -> dict:
    """configs/local.yaml on `graph`, tables sized from its graph.json, dim 16."""
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    sizes = json.loads((graph / "graph.json").read_text())["tables"]
    for table in config["model"]["embeddings"]["tables"]:
        table.update(num_embeddings=sizes[table["name"]], embedding_dim=16)
    for split, folder in (("train_data", "train"), ("validation_data", "validation")):
        config[split].update(data_root=str(graph / folder), per_replica_batch_size=BATCH)
    config["training"].update(
        save_dir=str(out), num_epochs=epochs, checkpoint_every_n=10_000,
        train_log_every_n=steps_per_eval, eval_log_every_n=steps_per_eval, num_eval_steps=-1,
    )  # fmt: skip
    return config


def train(config: dict, save_dir: Path, nproc: int) -> list[dict]:
    """Run the real command; the validation records of metrics.jsonl."""
    shutil.rmtree(save_dir, ignore_errors=True)
    path = save_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    command = [sys.executable, "-m", "tml.core.launch", "--standalone", "--nnodes", "1",
               "--nproc_per_node", str(nproc), str(RUN_PY), f"--config_yaml_path={path}",
               f"--save_dir={save_dir}"]  # fmt: skip
    with open(save_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, cwd=REPO, env=env, stdout=log, stderr=log)
    records = [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == "validation"]


def reaches(curve: list[dict], target: float) -> int | None:
    """The first evaluated step whose MRR reaches `target`."""
    return next((r["step"] for r in curve if r["mrr"] >= target), None)


def community_recall(save_dir: Path, graph: Path, old_users: int, k: int = 10) -> dict:
    """Recall@k of the planted community among each user's k nearest users (cosine), for a
    sample of old users and every new user."""
    column = pq.read_table(save_dir / "embeddings" / "user.parquet").column("embedding")
    users = np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float64)
    unit = users / np.linalg.norm(users, axis=1, keepdims=True)
    data = pq.read_table(graph / "communities.parquet").to_pydict()
    labels = np.full(len(users), -1)
    for table, row, community in zip(data["table"], data["id"], data["community"], strict=True):
        if table == "user":
            labels[row] = community
    rng = np.random.default_rng(0)
    old = rng.choice(old_users, min(1000, old_users), replace=False)
    new = np.arange(old_users, len(users))
    result = {}
    for name, queries in (("old_users", old), ("new_users", new)):
        top = nearest(unit, queries, k)
        result[name] = float((labels[top] == labels[queries][:, None]).mean())
    return result


def plot(curves: dict[str, list[dict]], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for label, curve in curves.items():
        axis.plot([r["step"] for r in curve], [r["mrr"] for r in curve], marker=".", label=label)
    axis.axhline(target, color="grey", linestyle=":", label="scratch, final MRR")
    axis.set_xlabel("step")
    axis.set_ylabel("validation MRR (filtered)")
    axis.set_title("v2 = v1 + 10 % new entities: warm start vs from scratch")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-versions")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=None, help="Also copy the plot here.")
    args = parser.parse_args()
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    v1, v2 = out / "v1", out / "v2"
    synthetic.generate(str(v1), seed=3, overwrite=True, **GRAPH)
    synthetic.grow(str(v2), str(v1), new_fraction=0.1, overwrite=True)
    steps_per_epoch = -(-json.loads((v1 / "graph.json").read_text())["num_train_edges"] // (
        BATCH * args.nproc))  # fmt: skip
    every = max(1, args.epochs * steps_per_epoch // 20)
    train(config_for(v1, out / "run-v1", args.epochs, every), out / "run-v1", args.nproc)
    final = sorted((out / "run-v1" / "checkpoints").glob("step_*"))[-1]
    curves = {}
    scratch = config_for(v2, out / "run-v2-scratch", args.epochs, every)
    scratch["training"]["seed"] = 1
    curves["scratch"] = train(scratch, out / "run-v2-scratch", args.nproc)
    for name, new_rows, anchor in WARM_RUNS:
        warm = config_for(v2, out / f"run-v2-{name}", args.epochs, every)
        warm["training"]["initial_checkpoint_dir"] = str(final)
        warm["warm_start"] = {"new_rows": new_rows, "anchor": anchor}
        curves[name] = train(warm, out / f"run-v2-{name}", args.nproc)
    scratch_curve = curves["scratch"]
    target, total = scratch_curve[-1]["mrr"], scratch_curve[-1]["step"]
    old_users = GRAPH["num_users"]
    results: dict = {"target_mrr": target, "total_steps": total, "reach": {}, "recall": {}}
    for label, curve in curves.items():
        step = reaches(curve, target)
        results["reach"][label] = {
            "step": step, "fraction": None if step is None else step / total,
            "final_mrr": curve[-1]["mrr"], "first_mrr": curve[0]["mrr"],
        }  # fmt: skip
    for name in curves:
        run = out / f"run-v2-{name}"
        results["recall"][name] = community_recall(run, v2, old_users)
        drift = compare_exports(out / "run-v1", run, ["user"], k=10)[0]
        results.setdefault("overlap_v1", {})[name] = drift.to_dict()
    results["loadavg"] = Path("/proc/loadavg").read_text().strip()
    results["curves"] = {label: [(r["step"], r["mrr"]) for r in c] for label, c in curves.items()}
    plot(curves, target, out / "mrr.png")
    if args.plot:
        shutil.copy(out / "mrr.png", args.plot)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "curves"}, indent=2))


if __name__ == "__main__":
    main()

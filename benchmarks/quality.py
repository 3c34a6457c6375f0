"""Kinships quality benchmark: import, train each operator, report filtered test metrics.

    python benchmarks/quality.py [--data data/kinships] [--out runs/bench-quality] [--epochs N]

Every operator trains with the config the importer writes for it (the product's defaults for a
new graph), changing only the comparator for TransE (L1, PyKEEN's TransE default, or L2). One rank, one thread. Prints a
table and one JSON line per run; settings were picked on the validation split, the figures here
are on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KINSHIPS = REPO / "datasets" / "kinships"
RUN_PY = REPO / "tml" / "projects" / "twhin" / "run.py"

# (label, operator, comparator); PyKEEN 1.11 / PBG 1.0 figures from datasets/kinships/README.md.
VARIANTS = [
    ("ComplEx", "complex_diagonal", "dot"),
    ("DistMult", "diagonal", "dot"),
    ("TransE", "translation", "l1"),
    ("TransE (l2)", "translation", "l2"),
    ("TwHIN translation", "translation", "dot"),
    ("linear", "linear", "dot"),
    ("identity", "identity", "dot"),
]
PEERS = {"ComplEx": (0.780, 0.774), "DistMult": (0.193, 0.598), "TransE": (0.288, 0.212)}


def import_kinships(data: Path, operator: str) -> dict:
    """The importer's config for Kinships with `operator`: the defaults a new user gets."""
    subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.import_kg", "--out", str(data),
         "--train", str(KINSHIPS / "train.tsv"), "--valid", str(KINSHIPS / "valid.tsv"),
         "--test", str(KINSHIPS / "test.tsv"), "--operator", operator, "--overwrite"],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return yaml.safe_load((data / "config.yaml").read_text())


def run_variant(data: Path, label: str, operator: str, comparator: str, out: Path) -> dict:
    config = import_kinships(data / operator, operator)
    config["model"]["comparator"] = comparator
    save_dir = out / operator / comparator
    shutil.rmtree(save_dir, ignore_errors=True)  # a benchmark trains from scratch
    config_path = out / f"{operator}-{comparator}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(RUN_PY), f"--config_yaml_path={config_path}", f"--save_dir={save_dir}"],
        check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    result = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.evaluate", f"--save_dir={save_dir}",
         "--split", "test"],
        check=True, cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    edges = sum(1 for _ in open(KINSHIPS / "train.tsv")) * config["training"]["num_epochs"]
    return {
        "model": label, "operator": operator, "comparator": comparator,
        "test_mrr": metrics["mrr"], "hits@1": metrics["hits@1"], "hits@10": metrics["hits@10"],
        "train_seconds": seconds, "positives_per_s": edges / seconds,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench-quality")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-quality")
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    rows = []
    for label, operator, comparator in VARIANTS:
        if args.only and label not in args.only:
            continue
        row = run_variant(args.data, label, operator, comparator, args.out)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print(f"{'model':<18} {'test MRR':>8} {'Hits@1':>7} {'Hits@10':>7} {'train s':>8} "
          f"{'pos/s':>8}  peers (PyKEEN / PBG)")  # fmt: skip
    for row in rows:
        peers = PEERS.get(row["model"])
        peer_text = f"{peers[0]:.3f} / {peers[1]:.3f}" if peers else ""
        print(f"{row['model']:<18} {row['test_mrr']:>8.3f} {row['hits@1']:>7.3f} "
              f"{row['hits@10']:>7.3f} {row['train_seconds']:>8.1f} "
              f"{row['positives_per_s']:>8,.0f}  {peer_text}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

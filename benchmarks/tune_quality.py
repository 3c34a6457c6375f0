"""Does tuning pay? Defaults against the tuned best, on the test split, per knowledge graph.

    python benchmarks/tune_quality.py [--graphs kinships,nations,umls] [--pykeen DIR]
        [--out runs/bench-tune] [--tune_args "--trials 30 --timeout 1080 ..."]

For each graph: import it (ComplEx, dim 64, the importer's defaults), train the defaults and score
their test split; `tune` on the validation split (never test); train `best.yaml` and score its
test split, and score the best trial's own run too. Kinships ships in datasets/; Nations and UMLS
are read from PyKEEN's wheel (`pip download pykeen==1.11.1 --no-deps`, unzip, pass
`--pykeen DIR/pykeen/datasets`; MIT-licensed package, not redistributed here). Prints one JSON
line per graph and a table; load averages are sampled every 30 s while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_PY = REPO / "tml" / "projects" / "twhin" / "run.py"
DEFAULT_TUNE_ARGS = "--trials 30 --timeout 1080 --jobs 2 --eval_every_epochs 5 --seed 0"
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def graph_files(name: str, pykeen: Path | None) -> dict[str, Path]:
    if name == "kinships":
        root, suffix = REPO / "datasets" / "kinships", ".tsv"
    elif pykeen is None:
        raise SystemExit(f"{name}: pass --pykeen DIR (PyKEEN's pykeen/datasets folder)")
    else:
        root, suffix = pykeen / name, ".txt"
    return {split: root / f"{split}{suffix}" for split in ("train", "valid", "test")}


def run(*command: str, log: Path | None = None) -> str:
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115
    result = subprocess.run(
        ["nice", "-n", "10", *command], cwd=REPO, env=ENV, stdout=out,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}; see {log}")
    return result.stdout or ""


def train_and_test(config: Path, save_dir: Path) -> dict:
    """Train a config from scratch; its last validation MRR and its test metrics."""
    started = time.perf_counter()
    run(sys.executable, str(RUN_PY), f"--config_yaml_path={config}", f"--save_dir={save_dir}",
        log=save_dir.with_suffix(".log"))  # fmt: skip
    seconds = time.perf_counter() - started
    return {**test_metrics(save_dir), "train_seconds": round(seconds, 1)}


def test_metrics(save_dir: Path) -> dict:
    records = [json.loads(x) for x in (save_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [r["mrr"] for r in records if r.get("split") == "validation"]
    output = run(sys.executable, "-m", "tml.projects.twhin.evaluate", f"--save_dir={save_dir}",
                 "--split", "test")  # fmt: skip
    test = json.loads(output.strip().splitlines()[-1])
    return {"valid_mrr": validation[-1], "test_mrr": test["mrr"], "test_hits@10": test["hits@10"]}


class LoadSampler:
    """/proc/loadavg every 30 s in the background."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if self._stop.wait(30):
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"load1_median": statistics.median(self.samples), "load1_max": max(self.samples)}


def bench_graph(name: str, pykeen: Path | None, out: Path, tune_args: str) -> dict:
    files, data, work = graph_files(name, pykeen), out / "data" / name, out / name
    work.mkdir(parents=True, exist_ok=True)
    run(sys.executable, "-m", "tml.projects.twhin.import_kg", "--out", str(data), "--overwrite",
        "--operator", "complex_diagonal", "--dim", "64",
        *(arg for split, path in files.items() for arg in (f"--{split}", str(path))))  # fmt: skip
    defaults = train_and_test(data / "config.yaml", work / "default")
    load = LoadSampler()
    started = time.perf_counter()
    run(sys.executable, "-m", "tml.projects.twhin.tune", f"--config_yaml_path={data}/config.yaml",
        f"--save_dir={work / 'tune'}", *shlex.split(tune_args), log=work / "tune.log")  # fmt: skip
    tune_seconds = time.perf_counter() - started
    loads = load.stop()
    trials = json.loads((work / "tune" / "trials.json").read_text())
    best_row = max((t for t in trials if t["state"] == "complete"),
                   key=lambda t: t["validation_mrr"])  # fmt: skip
    tuned = train_and_test(work / "tune" / "best.yaml", work / "best")
    best_trial = test_metrics(Path(best_row["save_dir"]))
    seconds = [t["seconds"] for t in trials if t["seconds"] is not None]
    states = [t["state"] for t in trials]
    return {
        "graph": name, "default": defaults, "tuned": tuned, "best_trial": best_trial,
        "best_params": {k: v for k, v in best_row.items() if k not in (
            "number", "state", "validation_mrr", "evaluations", "seconds", "save_dir", "reason")},
        "tune_seconds": round(tune_seconds), "trials": len(trials),
        "complete": states.count("complete"), "pruned": states.count("pruned"),
        "failed": states.count("fail"), "trial_seconds_median": statistics.median(seconds),
        "trial_seconds_max": max(seconds), **loads,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default="kinships,nations,umls")
    parser.add_argument("--pykeen", type=Path, default=None, help="PyKEEN's pykeen/datasets dir")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-tune")
    parser.add_argument("--tune_args", default=DEFAULT_TUNE_ARGS)
    args = parser.parse_args()
    rows = []
    for name in args.graphs.split(","):
        row = bench_graph(name, args.pykeen, args.out, args.tune_args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        "\n| graph | default valid / test MRR | tuned valid / test MRR | best trial test MRR "
        "| tune wall s | trials (complete/pruned/failed) | trial s median / max | load 1m |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, t = r["default"], r["tuned"]
        print(f"| {r['graph']} | {d['valid_mrr']:.3f} / {d['test_mrr']:.3f} | "
              f"{t['valid_mrr']:.3f} / **{t['test_mrr']:.3f}** | {r['best_trial']['test_mrr']:.3f}"
              f" | {r['tune_seconds']} | {r['complete']}/{r['pruned']}/{r['failed']} | "
              f"{r['trial_seconds_median']:.0f} / {r['trial_seconds_max']:.0f} | "
              f"{r['load1_median']:.1f} (max {r['load1_max']:.1f}) |")  # fmt: skip


if __name__ == "__main__":
    main()

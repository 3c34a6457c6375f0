"""Throughput benchmark on PyTorch-BigGraph's setup: positive edges/s, where the time goes, memory.

    python benchmarks/throughput.py [--entities 1000000] [--edges 5000000] [--ranks 1 2]
        [--batch-size N] [--repeat K] [--no-eval] [--no-profile] [--threads T]
        [--compile [--inductor-cache DIR]] [--data DIR] [--out DIR]

Generates (once, cached under --data) a homogeneous synthetic graph: power-law endpoints,
4 relations mixed 50/30/15/5 %, ids scattered, 0.1 % held out. Trains one epoch of it with
configs/bench.yaml (translation + dot, dim 64, 50 in-batch + 50 uniform negatives, softmax,
row-wise Adagrad lr 0.1) on each rank count via torchrun, then ranks the held-out edges against
every entity (filtered MRR), so speed never comes from skipping work. Prints one JSON line per
run (with rank 0's timeline of fixed costs, tml/core/timeline.py) and a table of medians over
--repeat runs; the step breakdown comes from one short extra run
per rank count under the profiler, which is kept out of the timed runs. PBG 1.0 does about
208,000 edges/s with 2 processes on a 2-core machine of this kind (124,000 with 1).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tml.core.profiling import WARMUP_STEPS  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.data.dataset import make_dataset  # noqa: E402
from tml.projects.twhin.tools import synthetic  # noqa: E402

RUN_PY = REPO / "tml" / "projects" / "twhin" / "run.py"
PBG_EDGES_PER_S = 208_000
PROFILE_STEPS = 20


def graph_dir(data: Path, entities: int, edges: int) -> Path:
    """The benchmark graph, generated on first use (about 7 s for 5M edges)."""
    directory = data / f"{entities}x{edges}"
    if not (directory / "graph.json").is_file():
        print(f"generating {directory} ...", file=sys.stderr, flush=True)
        synthetic.generate(
            str(directory), schema="homogeneous", num_entities=entities, num_edges=edges,
            validation_fraction=0.001, overwrite=True,
        )  # fmt: skip
    return directory


def bench_config(graph: Path, entities: int, batch_size: int | None) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "configs" / "bench.yaml").read_text())
    config["model"]["embeddings"]["tables"][0]["num_embeddings"] = entities
    for section, split in (("train_data", "train"), ("validation_data", "validation")):
        config[section]["data_root"] = str(graph / split)
        if batch_size:
            config[section]["per_replica_batch_size"] = batch_size
    return config


def profiled(config: dict[str, Any]) -> dict[str, Any]:
    """The config for a short run that profiles PROFILE_STEPS steps after the warm-up (a
    separate run: the profiler slows the steps it records and takes seconds to write)."""
    profiled = copy.deepcopy(config)
    profiled["runtime"] = {**profiled.get("runtime", {}), "profile_steps": PROFILE_STEPS}
    profiled["training"]["num_train_steps"] = WARMUP_STEPS + PROFILE_STEPS + 5
    return profiled


def loader_edges_per_s(config: dict[str, Any], max_batches: int = 400) -> float:
    """The data loader alone (read, shuffle, negatives, KJT), one rank, no training."""
    parsed = TwhinConfig.model_validate(config)
    dataset = make_dataset(parsed.model.graph_shape(), parsed.train_data, "train_data", rank=0,
                           world_size=1, seed=parsed.training.seed, shuffle=True)  # fmt: skip
    started, edges = time.perf_counter(), 0
    for index, batch in enumerate(dataset.batches(epoch=0)):
        edges += batch.num_real_edges
        if index + 1 == max_batches:
            break
    return edges / (time.perf_counter() - started)


def train_once(
    config: dict[str, Any], ranks: int, save_dir: Path, inductor_cache: Path | None = None
) -> dict[str, Any]:
    """One timed run; with model.compile, inductor's cache is `inductor_cache` (warm after the
    first run that used it) or, when None, a new empty one (cold)."""
    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(parents=True)
    config_path = save_dir.parent / f"{save_dir.name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE",
               TORCHINDUCTOR_CACHE_DIR=str(inductor_cache or save_dir / "inductor-cache"))  # fmt: skip
    env.pop("OMP_NUM_THREADS", None)  # the trainer picks threads per rank
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks), str(RUN_PY),
               f"--config_yaml_path={config_path}", f"--save_dir={save_dir}"]  # fmt: skip
    load = os.getloadavg()[0]
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    with open(save_dir / "train.log", "w") as log:
        subprocess.run(command, check=True, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    ended = time.time()
    records = [json.loads(line) for line in open(save_dir / "metrics.jsonl")]
    last = [r for r in records if r.get("split", "train") == "train"][-1]
    return {"wall_s": wall, "cpu_s": children_cpu_s() - cpu_before, "loop_s": last["loop_s"],
            "peak_rss_mb": last["peak_rss_mb"], "final_loss": last["loss"], "load_avg_1m": load,
            "timeline": rank0_timeline(save_dir / "train.log", wall, ended)}  # fmt: skip


def children_cpu_s() -> float:
    """User + system CPU seconds of every finished child process (torchrun and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rank0_timeline(log: Path, wall: float, ended: float) -> dict[str, list[float | None]]:
    """Rank 0's phases, [wall s, CPU s] (tml/core/timeline.py's log line), plus the launcher
    (torchrun's start until rank 0's process started) and the exit (after rank 0's last line
    until the command returned), which rank 0 cannot see."""
    for line in log.read_text().splitlines():
        if "timeline wall/cpu s:" not in line:
            continue
        stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        phases: dict[str, list[float | None]] = {}
        for part in line.split(": ", 1)[1].split():
            name, value = part.split("=")
            phases[name] = [float(x) for x in value.split("/")]
        exit_s = ended - stamp
        total_wall = phases["total"][0] or 0.0
        phases["launcher"] = [wall - total_wall - exit_s, None]
        phases["exit"] = [exit_s, None]
        return phases
    return {}


def step_breakdown(config: dict[str, Any], ranks: int, save_dir: Path) -> dict[str, Any]:
    """Milliseconds per step by stage (rank 0), from a short profiled run."""
    train_once(profiled(config), ranks, save_dir)
    profile = json.loads((save_dir / "profile" / "rank_0.json").read_text())
    return {"ms_per_step": profile["ms_per_step"], "wall_ms_per_step": profile["wall_ms_per_step"]}


def held_out_metrics(save_dir: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.evaluate", f"--save_dir={save_dir}",
         "--split", "valid"],
        check=True, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=5_000_000)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="per-rank batch (default: configs/bench.yaml's)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per rank count (median)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out ranking")
    parser.add_argument("--no-profile", action="store_true", help="skip the step breakdown run")
    parser.add_argument("--threads", type=int, default=None, help="runtime.threads_per_rank")
    parser.add_argument("--compile", action="store_true", help="model.compile: true")
    parser.add_argument(
        "--inductor-cache", type=Path, default=None,
        help="with --compile: one inductor cache for every run (warm after the first); "
        "default: a new one per run (cold)",
    )  # fmt: skip
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = parser.parse_args()

    graph = graph_dir(args.data, args.entities, args.edges)
    train_edges = json.loads((graph / "graph.json").read_text())["num_train_edges"]
    config = bench_config(graph, args.entities, args.batch_size)
    config["model"]["compile"] = args.compile
    if args.threads:
        config.setdefault("runtime", {})["threads_per_rank"] = args.threads
    loader = loader_edges_per_s(config)
    rows = []
    for ranks in args.ranks:
        runs = []
        breakdown = (
            step_breakdown(config, ranks, args.out / f"ranks{ranks}-profile")
            if not args.no_profile
            else {"ms_per_step": {}, "wall_ms_per_step": None}
        )
        for repeat in range(args.repeat):
            save_dir = args.out / f"ranks{ranks}-run{repeat}"
            run = train_once(config, ranks, save_dir, args.inductor_cache)
            row = {
                "ranks": ranks, "run": repeat, "edges": train_edges,
                "batch_size": config["train_data"]["per_replica_batch_size"],
                "edges_per_s_wall": train_edges / run["wall_s"],
                "edges_per_s_loop": train_edges / run["loop_s"],
                "loader_edges_per_s": loader, **run, **breakdown,
            }  # fmt: skip
            if repeat == 0 and not args.no_eval:
                metrics = held_out_metrics(save_dir)  # seeded runs: the same for every repeat
                row.update(mrr=metrics["mrr"], hits_at_10=metrics["hits@10"],
                           eval_edges=metrics["edges"])  # fmt: skip
            print(json.dumps(row), flush=True)
            runs.append(row)
        rows.append(runs)
    print()
    print(f"graph: {args.entities:,} entities, {train_edges:,} train edges; loader alone "
          f"{loader:,.0f} edges/s; PBG 2 procs {PBG_EDGES_PER_S:,}/s")  # fmt: skip
    header = (
        f"{'ranks':>5} {'edges/s wall':>13} {'edges/s loop':>13} {'x PBG':>6} "
        f"{'MRR':>6} {'peak RSS MiB':>13}  ms/step: data lookup scoring bwd+upd comm"
    )
    print(header)  # fmt: skip
    for runs in rows:
        wall = statistics.median(r["edges_per_s_wall"] for r in runs)
        loop = statistics.median(r["edges_per_s_loop"] for r in runs)
        first = runs[0]
        stages = first["ms_per_step"]
        split = " ".join(
            f"{stages.get(k, 0):.1f}"
            for k in ("data", "lookup", "scoring", "backward_update", "communication")
        )
        rss = max(first["peak_rss_mb"].values())
        mrr = f"{first['mrr']:.3f}" if "mrr" in first else "-"
        print(f"{first['ranks']:>5} {wall:>13,.0f} {loop:>13,.0f} {wall / PBG_EDGES_PER_S:>6.2f} "
              f"{mrr:>6} {rss:>13,.0f}  {split}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

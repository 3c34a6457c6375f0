"""Memory of filtered ranking over a large table: each rank's peak RSS with ranking off and on.

    python benchmarks/ranking_memory.py [--entities 4000000] [--edges 2000000]
        [--eval-edges 1000] [--steps 20] [--ranks 2] [--repo DIR] [--data DIR] [--out DIR]

Generates (once, under --data) a homogeneous graph of --entities entities (configs/bench.yaml's
model: one table, dim 64, 4 relations) with about --eval-edges validation edges, then trains it
for --steps steps on --ranks ranks twice: with `evaluation.ranking` off and on. The validation at
the end ranks every validation edge against every entity (filtered) and its record holds each
rank's peak RSS (`peak_rss_mb`). Then `evaluate` ranks the same edges from the final checkpoint on
one process and under torchrun on --ranks ranks; all three must give the same metrics.

The budget checked: each rank's peak RSS with ranking on stays below its fixed size plus 60 % of
the table's bytes, the fixed size being the rank's peak with ranking off minus its share of the
table (what the process holds besides the table). --repo runs another checkout's code (e.g. an
older commit, to measure what it did); that checkout's validation record must hold peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tml.projects.twhin.tools import synthetic  # noqa: E402

METRICS = ("mrr", "mean_rank", "hits@1", "hits@3", "hits@10", "auc", "edges")
MIB = 1 << 20
# Runs a command and prints the peak RSS (KiB) of its largest process: ru_maxrss of RUSAGE_CHILDREN
# covers every descendant this wrapper waited for (torchrun waits for its workers).
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(code)"
)


def graph_dir(data: Path, entities: int, edges: int, eval_edges: int) -> Path:
    directory = data / f"{entities}x{edges}v{eval_edges}"
    if not (directory / "graph.json").is_file():
        print(f"generating {directory} ...", file=sys.stderr, flush=True)
        synthetic.generate(
            str(directory), schema="homogeneous", num_entities=entities, num_edges=edges,
            validation_fraction=eval_edges / edges, overwrite=True,
        )  # fmt: skip
    return directory


def run_config(graph: Path, entities: int, steps: int, ranking: bool) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "configs" / "bench.yaml").read_text())
    config["model"]["embeddings"]["tables"][0]["num_embeddings"] = entities
    for section, split in (("train_data", "train"), ("validation_data", "validation")):
        config[section]["data_root"] = str(graph / split)
    config["training"].update(
        num_train_steps=steps, num_epochs=1000, eval_log_every_n=steps, num_eval_steps=-1,
        eval_timeout_in_s=1e6, checkpoint_every_n=steps,
    )  # fmt: skip
    config["evaluation"] = {"ranking": ranking, "filtered": True}
    return config


def measured(command: list[str], repo: Path, log: Path) -> tuple[str, float]:
    """(stdout, peak RSS MiB of the command's largest process)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(repo))
    env.pop("OMP_NUM_THREADS", None)  # the trainer picks threads per rank
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command], cwd=repo, env=env,
                            capture_output=True, text=True)  # fmt: skip
    log.write_text(result.stdout + result.stderr)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("peak_rss_kib")]
    return result.stdout, int(peak[-1].split()[1]) / 1024


def train(config: dict[str, Any], ranks: int, repo: Path, save_dir: Path) -> dict[str, Any]:
    """The validation record at the end of a `ranks`-rank run."""
    save_dir.mkdir(parents=True, exist_ok=True)
    config_path = save_dir.parent / f"{save_dir.name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    measured([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
              str(ranks), str(repo / "tml" / "projects" / "twhin" / "run.py"),
              f"--config_yaml_path={config_path}", f"--save_dir={save_dir}"],
             repo, save_dir.parent / f"{save_dir.name}.log")  # fmt: skip
    records = [json.loads(line) for line in open(save_dir / "metrics.jsonl")]
    return [r for r in records if r.get("split") == "validation"][-1]


def evaluate(save_dir: Path, ranks: int, repo: Path) -> tuple[dict[str, Any], float]:
    """`evaluate --split valid` on one process (ranks 1) or under torchrun; its metrics and the
    peak RSS of its largest process."""
    module = ["-m", "tml.projects.twhin.evaluate", f"--save_dir={save_dir}", "--split", "valid"]
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)
    ]  # fmt: skip
    stdout, peak = measured(launcher + module, repo, save_dir.parent / f"evaluate{ranks}.log")
    return json.loads(stdout.strip().splitlines()[-1]), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=4_000_000)
    parser.add_argument("--edges", type=int, default=2_000_000)
    parser.add_argument("--eval-edges", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose code runs")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ranking_memory")
    args = parser.parse_args()
    graph = graph_dir(args.data, args.entities, args.edges, args.eval_edges)
    table_mib = args.entities * 64 * 4 / MIB
    print(f"load average {os.getloadavg()[0]:.2f}; table {args.entities:,} x 64 fp32 = "
          f"{table_mib:,.0f} MiB; {args.ranks} ranks", flush=True)  # fmt: skip
    off = train(run_config(graph, args.entities, args.steps, False), args.ranks, args.repo,
                args.out / "ranking_off")  # fmt: skip
    on = train(run_config(graph, args.entities, args.steps, True), args.ranks, args.repo,
               args.out / "ranking_on")  # fmt: skip
    share = table_mib / args.ranks
    rows = []
    for rank in sorted(on["peak_rss_mb"]):
        off_mib, on_mib = off["peak_rss_mb"][rank], on["peak_rss_mb"][rank]
        limit = (off_mib - share) + 0.6 * table_mib
        rows.append({"rank": rank, "ranking_off_mib": off_mib, "ranking_on_mib": on_mib,
                     "added_mib": on_mib - off_mib, "limit_mib": limit, "within": on_mib < limit})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    results = {"training validation": ({k: on[k] for k in METRICS if k != "edges"}
                                       | {"edges": on["ranked_edges"]}, None)}  # fmt: skip
    for ranks in sorted({1, args.ranks}):
        if ranks > 1 and args.repo != REPO:
            continue  # older checkouts evaluate on one process only
        results[f"evaluate, {ranks} process(es)"] = evaluate(
            args.out / "ranking_on", ranks, args.repo
        )
    reference = results["evaluate, 1 process(es)"][0]
    print(f"\n{'':<28}" + "".join(f"{m:>12}" for m in METRICS) + f"{'peak MiB':>11}")
    for name, (metrics, peak) in results.items():
        cells = "".join(f"{metrics[m]:>12.7g}" for m in METRICS)
        print(f"{name:<28}{cells}{peak if peak else on['peak_rss_mb']['rank0']:>11,.0f}")
    equal = all(abs(metrics[m] - reference[m]) <= 1e-6 * max(1.0, abs(reference[m]))
                for metrics, _ in results.values() for m in METRICS)  # fmt: skip
    print(f"metrics equal to the single process: {equal}; every rank within its budget: "
          f"{all(row['within'] for row in rows)}")  # fmt: skip
    return 0 if equal and all(row["within"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

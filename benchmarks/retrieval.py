"""Nearest-neighbour retrieval on a large exported table: index build and query time, peak memory.

    python benchmarks/retrieval.py [--rows 1000000] [--dim 64] [--names] [--repeat 3]
        [--repo DIR] [--out DIR]

Writes (once, under --out) the save dir of a bench-sized run: configs/bench.yaml's config with a
--rows x --dim table and its export as parquet and npy (random vectors, written by the export's
own writers; names `e<id>` with --names). Then runs the `neighbors` command as a user would,
`--table entity --query 42 --index faiss --json`: once with no saved index (it builds one), then
--repeat times reusing it, and once more with a query by name (with --names). Each run is a fresh
process; reported: wall time, peak RSS of the process, the index file's size, the time and
memory of importing the command alone (a floor no query can go under), and the search alone
(`find_neighbors` timed inside a process, after its imports). --repo runs another
checkout's code (e.g. the commit before, to measure what it did).
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

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tml.projects.twhin.artifacts.embedding_files import (  # noqa: E402
    RELATIONS_FILE,
    WRITERS,
    relation_records,
)
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.models.scorer import EdgeScorer  # noqa: E402

MIB = 1 << 20
PEAK_WRAPPER = (  # the peak RSS (KiB) of the command it runs, on stderr
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(code)"
)


def make_save_dir(out: Path, rows: int, dim: int, names: bool) -> Path:
    """A save dir holding only what `neighbors` reads: config.yaml and embeddings/."""
    save_dir = out / f"{rows}x{dim}{'-named' if names else ''}"
    embeddings = save_dir / "embeddings"
    if (embeddings / "entity.npy").is_file():
        return save_dir
    config = yaml.safe_load((REPO / "configs" / "bench.yaml").read_text())
    table = config["model"]["embeddings"]["tables"][0]
    table.update(num_embeddings=rows, embedding_dim=dim)
    embeddings.mkdir(parents=True, exist_ok=True)
    (save_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    writers = [
        WRITERS[kind](embeddings, "entity", rows, dim, named=names) for kind in ("parquet", "npy")
    ]
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1 << 18):
        count = min(1 << 18, rows - start)
        block = rng.standard_normal((count, dim), dtype=np.float32)
        block_names = np.array([f"e{i}" for i in range(start, start + count)]) if names else None
        for writer in writers:
            writer.write(block, block_names)
    for writer in writers:
        writer.close()
    parsed = TwhinConfig.model_validate(config)
    dense = {f"scorer.{k}": v for k, v in EdgeScorer(parsed.model).state_dict().items()}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist(relation_records(parsed, dense)), embeddings / RELATIONS_FILE
    )
    return save_dir


def measured(command: list[str], repo: Path) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MiB) of a command run in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_WAIT_POLICY="PASSIVE")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command], cwd=repo, env=env,
                            capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("peak_rss_kib")]
    return result.stdout, wall, int(peak[-1].split()[1]) / 1024


def neighbors(save_dir: Path, repo: Path, query: str) -> tuple[dict, float, float]:
    command = [sys.executable, "-m", "tml.projects.twhin.neighbors", f"--save_dir={save_dir}",
               "--table", "entity", "--query", query, "--index", "faiss", "--json"]  # fmt: skip
    stdout, wall, peak = measured(command, repo)
    return json.loads(stdout), wall, peak


def search_seconds(save_dir: Path, repo: Path, query: str) -> float:
    """The search alone, in a fresh process after its imports: `find_neighbors` timed."""
    script = (
        "import sys, time; from tml.projects.twhin.search.neighbors import find_neighbors; "
        "started = time.perf_counter(); "
        "find_neighbors(sys.argv[1], 'entity', [sys.argv[2]], index='faiss'); "
        "print(time.perf_counter() - started)"
    )
    stdout, _, _ = measured([sys.executable, "-c", script, str(save_dir), query], repo)
    return float(stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--names", action="store_true", help="give the entities names")
    parser.add_argument("--repeat", type=int, default=3, help="queries reusing the index")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose code runs")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "retrieval")
    args = parser.parse_args()
    save_dir = make_save_dir(args.out, args.rows, args.dim, args.names)
    shutil.rmtree(save_dir / "index", ignore_errors=True)
    table_mib = (save_dir / "embeddings" / "entity.npy").stat().st_size / MIB
    print(f"load average {os.getloadavg()[0]:.2f}; table {args.rows:,} x {args.dim} "
          f"({table_mib:,.0f} MiB); code from {args.repo}", flush=True)  # fmt: skip
    _, import_s, import_mib = measured(
        [sys.executable, "-c", "import tml.projects.twhin.neighbors"], args.repo
    )
    built, build_s, build_mib = neighbors(save_dir, args.repo, "42")
    index_mib = sum(p.stat().st_size for p in (save_dir / "index").glob("*.faiss")) / MIB
    reused = [neighbors(save_dir, args.repo, "42") for _ in range(args.repeat)]
    rows = [("import the command only", import_s, import_mib),
            ("query 42, building the index", build_s, build_mib),
            (f"query 42, saved index (median of {args.repeat})",
             statistics.median(r[1] for r in reused), statistics.median(r[2] for r in reused))]  # fmt: skip
    searches = [search_seconds(save_dir, args.repo, "42") for _ in range(args.repeat)]
    rows.append((f"  of which the search itself (median of {args.repeat})",
                 statistics.median(searches), float("nan")))  # fmt: skip
    if args.names:
        _, named_s, named_mib = neighbors(save_dir, args.repo, f"e{args.rows - 1}")
        rows.append(("query by the last name, saved index", named_s, named_mib))
    print(f"index file: {index_mib:,.0f} MiB; 1.5 x index = {1.5 * index_mib:,.0f} MiB")
    print(f"{'':<44}{'wall s':>8}{'peak RSS MiB':>14}")
    for name, seconds, mib in rows:
        print(f"{name:<44}{seconds:>8.2f}{mib:>14,.0f}")
    found = [n["id"] for n in built["results"][0]["neighbors"]]
    same = all([n["id"] for n in r[0]["results"][0]["neighbors"]] == found for r in reused)
    print(f"neighbours of 42: {found} (the same from the saved index: {same})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

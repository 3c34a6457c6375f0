"""docs/scaling.md's planned half: TorchRec's sharding plans for TwHIN at 10^9 edges on 8, 64 and
256 H100s (planned on this CPU machine), with memory per GPU, bytes moved, step time, ranking cost
and what to configure.

    python benchmarks/scaling_plan.py --update docs/scaling.md   # make scaling-doc
    python benchmarks/scaling_plan.py --check docs/scaling.md    # exit 1 if the page is stale
    python benchmarks/scaling_plan.py --world-sizes 8            # one cluster size, to stdout

The generated text replaces what lies between the page's START and END markers; the rest of the
page (the measured half) is written by hand. Planning takes seconds and needs no GPU
(benchmarks/scaling/planner.py says how); the numbers other than the plans are arithmetic over
benchmarks/scaling/assumptions.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# TorchRec's enumerator intersects the allowed sharding types as Python sets of strings, so the
# planner's pick between equally good options (row-wise or table-row-wise on one host) follows
# string hashing. A fixed hash seed makes the doc reproducible; Python reads it at start-up.
HASH_SEED = "0"
if __name__ == "__main__" and os.environ.get("PYTHONHASHSEED") != HASH_SEED:
    os.execve(
        sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    )

from benchmarks.scaling.assumptions import Cluster, Workload  # noqa: E402
from benchmarks.scaling.doc import render  # noqa: E402
from benchmarks.scaling.report import cluster_report  # noqa: E402

WORLD_SIZES = (8, 64, 256)
START = "<!-- scaling-plan:start -->"
END = "<!-- scaling-plan:end -->"


def generate(world_sizes: list[int]) -> str:
    """The generated text for these cluster sizes, with the default workload and cluster."""
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    work, cluster = Workload(), Cluster()
    return render(work, cluster, [cluster_report(work, cluster, w) for w in world_sizes])


def replaced(page: str, text: str, path: Path) -> str:
    """`page` with `text` between its markers."""
    if page.count(START) != 1 or page.count(END) != 1 or page.index(START) > page.index(END):
        raise SystemExit(f"{path}: needs one {START} line, then one {END} line")
    head, rest = page.split(START, 1)
    return f"{head}{START}\n{text}{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--update", type=Path, help="rewrite this page's generated part")
    target.add_argument("--check", type=Path, help="exit 1 if this page's generated part is stale")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=list(WORLD_SIZES))
    args = parser.parse_args(argv)
    bad = [w for w in args.world_sizes if w < 8 or w % 8]
    if bad:
        parser.error(f"--world-sizes: whole hosts of 8 GPUs only (got {bad})")
    text = generate(args.world_sizes)
    path = args.update or args.check
    if path is None:
        sys.stdout.write(text)
        return 0
    page = path.read_text()
    new_page = replaced(page, text, path)
    if args.check:
        if new_page != page:
            print(f"{path} is stale: run `make scaling-doc`", file=sys.stderr)
            return 1
        return 0
    path.write_text(new_page)
    print(f"updated {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

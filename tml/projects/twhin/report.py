"""Draw a run's report: `python -m tml.projects.twhin.report --save_dir D [--sample N]
[--previous D0]`.

Writes `D/report/index.html` and its PNG plots (run_report/ says what they show); with
`--previous`, the previous version's run, also how far each table moved since (`compare`).
"""

from __future__ import annotations

import argparse
import sys

from tml.core.config import ConfigError
from tml.projects.twhin.eval.drift import compare_exports
from tml.projects.twhin.run_report import DEFAULT_SAMPLE, write_report
from tml.projects.twhin.tuning.report import is_tune_dir, report_tune_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir (after export).")
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                        help=f"Rows per table in the projection (default {DEFAULT_SAMPLE}).")  # fmt: skip
    parser.add_argument("--previous", default=None,
                        help="The previous version's save dir: adds the drift since (compare).")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if is_tune_dir(args.save_dir):  # a `tune` dir: its study's report (docs/tuning.md)
            page = report_tune_dir(args.save_dir)
        else:
            extra = []
            if args.previous:
                for drift in compare_exports(args.previous, args.save_dir):
                    extra.append((f"Drift of {drift.table} since {args.previous}", drift.to_dict()))
            page = write_report(args.save_dir, args.sample, extra)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

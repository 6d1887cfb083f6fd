"""``python -m boe_bench.report experiment=<name> [root=runs] [out=reports] [paper=results/paper] [wandb=offline]``

The report goes to reports/<name>/ (untracked); out=results replaces the committed one.
"""
import sys
from pathlib import Path

from boe_bench.errors import ConfigError
from boe_bench.report import report

USAGE = "usage: python -m boe_bench.report experiment=<name> [root=runs] [out=reports] [paper=results/paper] [wandb=offline|online]"


def main(argv: list[str]) -> int:
    if any("=" not in arg for arg in argv):
        print(USAGE, file=sys.stderr)
        return 2
    options = dict(arg.split("=", 1) for arg in argv)
    unknown = set(options) - {"experiment", "root", "out", "paper", "wandb"}
    if "experiment" not in options or unknown:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        report(options["experiment"], Path(options.get("root", "runs")), Path(options.get("out", "reports")),
               Path(options.get("paper", "results/paper")), options.get("wandb"))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``fem report OUTPUT_DIR``: (re)build ``report.md`` and ``plots/`` from the files a run left."""

from __future__ import annotations

import argparse

from fem.commands import SUMMARIES
from fem.report import build_report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fem report", description=SUMMARIES["report"])
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    print(f"report: {build_report(args.output_dir)}")
    return 0

"""``fem export RUN_DIR --out DIR [--round K] [--merge] [--dtype D] [--push_to_hub REPO]``: a run's round as a
shippable folder (the PEFT adapter, or with ``--merge`` the merged model) with a hub model card; with
``--push_to_hub`` the written folder is also uploaded (a failed upload is one error line, the folder stays)."""

from __future__ import annotations

import argparse

from fem.commands import SUMMARIES
from fem.export import DTYPES, export_run, push_folder


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fem export", description=SUMMARIES["export"])
    p.add_argument("run_dir", help="the output_dir of a `fem train` run")
    p.add_argument("--out", required=True, help="the folder to write (must not exist)")
    p.add_argument("--round", type=int, default=None, help="the round to export (default: the last finished one)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base: a full transformers model")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="merged weights' dtype (default: the run's dtype)")
    p.add_argument("--push_to_hub", metavar="REPO", default=None, help="also upload the folder to this hub repo")
    p.add_argument("--private", action="store_true", help="with --push_to_hub: create the repo private")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out = export_run(args.run_dir, args.out, round_index=args.round, merge=args.merge, dtype=args.dtype)
    kind = "merged model" if args.merge else "adapter"
    print(f"fem export: wrote the {kind} to {out} (model card: {out / 'README.md'})")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, private=args.private)
        print(f"fem export: pushed to {url}")
    return 0

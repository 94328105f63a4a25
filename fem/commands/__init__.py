"""The ``fem`` commands, one module each (open-r1 style): ``main(argv) -> exit code`` parses the command's
arguments, runs the preflight, builds what it needs from the library and prints the outcome. ``fem.cli``
dispatches to them; nothing in the library imports a command. This package face imports nothing, so that
``fem --help`` can read the summaries without torch."""

SUMMARIES = {
    "train": "Run the EM loop: E-step (rejection | star | pps) -> filter -> LoRA M-step (TRL) -> eval, for `rounds` rounds.",
    "eval": "Evaluate a model (optionally with a LoRA adapter) with any proposal on any task; no trainer is built.",
    "sample": "Draw rationales with any proposal on a task's prompts and write one JSON line per trace.",
    "tasks": "List the tasks and their data (`fem tasks list`), or self-test their verifiers (`fem tasks check NAME|--all`).",
    "bench": "Run the benchmark scripts (`fem bench list|all|core|NAME`); prints ratios and writes JSON.",
    "report": "(Re)build report.md and plots/ from the files a run left (`fem report OUTPUT_DIR`).",
    "export": "Write a run's adapter (or, with --merge, the merged model) as a folder with a model card (`fem export RUN_DIR --out DIR`).",
}
# commands whose arguments are a recipe plus overrides (their --help lists the recipe keys)
RECIPE_COMMANDS = ("train", "eval", "sample")

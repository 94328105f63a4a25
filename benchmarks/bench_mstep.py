"""(7) M-step overhead: fem's M-step (``fem.mstep.sft.train_adapter``: copy of the base model, prompt/completion
dataset, completion-only loss, LoRA r=8 all-linear, adapter saved) against a plain TRL ``SFTTrainer`` + LoRA script
on the same rows with the same hyperparameters (``_mstep_common.plain_trl``). SmolLM2-135M fp32 (tiny with
--quick), one thread, runs in pairs whose order alternates (plain/fem, fem/plain, ...) so that load drift hits both
alike; tokens/s = tokens seen / trainer runtime; the ratio is the median over pairs of fem/plain (and the same for
end-to-end wall, incl. model copy and adapter save). Goal: fem within 5 % of plain TRL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _mstep_common as M  # noqa: E402

NAME = "mstep"


def measure(args: argparse.Namespace) -> C.Measured:
    import warnings

    warnings.filterwarnings("ignore")
    from fem.models import SMOLLM2_ALIAS, load_model_and_tokenizer
    from fem.testing.tiny import save_tiny_model

    steps, batch, reps = (2, 4, 2) if args.quick else (2, 4, 4)
    with tempfile.TemporaryDirectory() as tmp:
        path, label = (str(save_tiny_model(tmp)), "tiny") if args.quick else (SMOLLM2_ALIAS, "smollm2-135m")
        model, tok = load_model_and_tokenizer(path)
        data = M.rows(steps * batch)
        tokens = M.count_tokens(tok, data)
        M.plain_trl(model, tok, data[:batch], 1, batch)  # warm-up (imports, first-call costs)
        rows = []
        for rep in range(reps):
            pair = [("plain TRL SFTTrainer + LoRA", M.plain_trl), ("fem M-step (train_adapter)", M.fem_mstep)]
            for impl, fn in pair if rep % 2 == 0 else pair[::-1]:
                load0 = C.load()
                r = fn(model, tok, data, steps, batch)
                rows.append(
                    {
                        "impl": impl,
                        "rep": rep,
                        "tokens": tokens,
                        **r,
                        "tokens_per_s": tokens / r["train_runtime_s"],
                        "tokens_per_s_wall": tokens / r["wall_s"],
                        "load": round((load0 + C.load()) / 2, 2),
                    }
                )
                print(rows[-1], flush=True)
    C.table(rows, C.COLUMNS[NAME])

    def paired(key: str) -> float:
        by = {(r["impl"], r["rep"]): r[key] for r in rows}
        return statistics.median(
            by[("fem M-step (train_adapter)", k)] / by[("plain TRL SFTTrainer + LoRA", k)] for k in range(reps)
        )

    ratio, ratio_w = paired("tokens_per_s"), paired("tokens_per_s_wall")
    goals = {
        "within_5pct": C.goal(
            "fem tokens/s within 5 % of plain TRL (trainer runtime, median of paired ratios)",
            round(ratio, 3),
            ratio >= 0.95,
        ),
        "wall_ratio": C.goal("same, end-to-end wall (model copy + save included)", round(ratio_w, 3), None),
    }
    return C.Measured(
        settings={
            "model": label,
            "steps": steps,
            "batch": batch,
            "lora": "r=8 alpha=16 all-linear",
            "reps": reps,
            "max_length": 512,
        },
        results=rows,
        goals=goals,
    )


if __name__ == "__main__":
    C.main(NAME, __doc__, measure)

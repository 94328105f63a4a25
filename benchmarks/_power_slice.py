"""The real-model arm of ``fem bench power``: SmolLM2-135M-Instruct on a slice of a task where it answers above
chance through the forced read-out, every sampler at the same decoded-token budget.

Per question, the sampler draws one rationale of at most ``T`` tokens from the plain prompt; fem's forced read-out
(``answer_mode: forced``: the task's cue after the rationale, the argmax over the options) gives the answer. Per
sampler: accuracy with its Wilson 95% interval, the mean of ``alpha log p(y)`` over the returned rationales (the
unnormalised log-likelihood under ``p^alpha``: ``log Z`` is unknown for a real model, so only differences between
rows at the same ``T`` mean something; EOS included when drawn), mean ``log p(y)``, decoded tokens per sample
(every decoded token, rejected or discarded ones included), and the wall time of the proposal alone (the read-out
is not timed) per sample and as a multiple of ancestral's. Every sampler decodes ``rows`` sequences per backend
call (ancestral: ``rows`` questions; best-of-K: ``rows / K`` questions; power_smc: ``rows / K`` questions of ``K``
particles; power_mh: ``rows`` chains), so ``wall_x_ancestral`` is at equal batch width, the throughput view. The
latency view (``latency_x_ancestral``, the published papers' measure) serves one question per backend call on the
first ``latency_n`` questions: ancestral and power_mh decode 1 sequence per call, best-of-K and power_smc their K
candidates or particles as one batch, so a wider batch that costs little more shows up as a smaller multiple.

**Equal tokens.** A budget ``K`` is ``K`` ancestral samples' worth of decoded tokens, measured (a real model stops
at EOS well before ``T``): best-of-K spends it by construction, power_mh takes the MH steps and power_smc the number
of particles (each about one temperature-1/alpha draw) that a pilot on 8 questions finds to spend it; the table
shows what each row actually decoded.

The model runs through fem's runtime on each backend of ``--backend`` (``hf``, ``vllm``, or ``hf,vllm``: the same
rows on both, each backend's multiples of its own ancestral sample).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common as C

from fem.configs import ProposalConfig
from fem.drawing import PLAIN
from fem.errors import ConfigError
from fem.generation import check_backend
from fem.proposals.base import Trace
from fem.recipe import parse_configs
from fem.runtime import Runtime, build_runtime
from fem.tasks.base import Example
from fem.utils.distributed import current_world

RECIPE = """model_name_or_path: {model}
dtype: float32
backend: {backend}
task: {task}
answer_mode: forced
train_limit: 100000
eval_limit: 100000
max_new_tokens: {T}
generation_batch_size: {rows}
output_dir: {out}
seed: {seed}
report_to: none
"""


def wilson(k: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a binomial proportion ``k / n`` (95% by default)."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(centre - half, 3), round(centre + half, 3)]


def spread(examples: Sequence[Example], n: int) -> list[Example]:
    """``n`` examples evenly spaced over the split (files are often ordered by source or subject)."""
    if n >= len(examples):
        return list(examples)
    return [examples[(i * len(examples)) // n] for i in range(n)]


class Timed:
    """A proposal whose ``propose`` calls are timed (the drawer's read-out is not)."""

    def __init__(self, proposal: Any):
        self.inner, self.name, self.wall_s = proposal, proposal.name, 0.0

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        t0 = time.perf_counter()
        out = self.inner.propose(prompts, num_samples, seed=seed)
        self.wall_s += time.perf_counter() - t0
        return out


def width(cfg: ProposalConfig) -> int:
    """Sequences one question decodes together: best-of-K's candidates, power_smc's particles, else 1."""
    return {"best_of_n": cfg.best_of_n, "power_smc": cfg.smc_particles}.get(cfg.proposal, 1)


def draw(runtime: Runtime, cfg: ProposalConfig, examples: Sequence[Example], seed: int) -> tuple[list, float]:
    """One sample per example through fem's drawer (forced read-out), in chunks of the proposal's prompts per call;
    returns the samples and the proposal's wall time."""
    timed = Timed(runtime.proposal(cfg))
    drawer = runtime.drawer(timed)
    per_call = max(1, cfg.generation_batch_size // width(cfg))
    samples = []
    for start in range(0, len(examples), per_call):
        samples += [row[0] for row in drawer.draw(examples[start : start + per_call], PLAIN, 1, seed=seed + start)]
    return samples, timed.wall_s


@dataclass(frozen=True)
class SliceSettings:
    """What one run of the arm measures, the same on every backend (module docstring)."""

    task: str
    split: str
    n: int  # questions, spread over the split
    T: int  # max new tokens per rationale
    multiples: Sequence[int]  # token budgets, in ancestral samples' worth
    model: str = "smollm2-135m-instruct"
    rows: int = 16  # sequences per backend call
    latency_n: int = 8  # questions of the latency view
    alpha: float = 4.0
    seed: int = 0


def slice_rows(
    task: str,
    split: str,
    n: int,
    T: int,
    multiples: Sequence[int],
    *,
    model: str = "smollm2-135m-instruct",
    backends: Sequence[str] = ("hf",),
    rows: int = 16,
    latency_n: int = 8,
    alpha: float = 4.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The arm's rows on each backend in ``backends`` (module docstring)."""
    for backend in backends:
        try:
            check_backend(backend)
        except ConfigError as e:
            raise SystemExit(f"fem bench power: --backend {backend}: {e}") from None
    settings = SliceSettings(task, split, n, T, tuple(multiples), model, rows, latency_n, alpha, seed)
    out: list[dict[str, Any]] = []
    for backend in backends:
        out += backend_rows(settings, backend)
    return out


def backend_rows(arm: SliceSettings, backend: str) -> list[dict[str, Any]]:
    """Ancestral and low temperature, then per budget of ``K`` ancestral samples' tokens (``K x`` ancestral's mean
    decoded tokens, measured here): best-of-K, power_mh (uniform, entropy) with the steps and power_smc with the
    particles that a pilot on 8 questions finds to spend that budget; then each row's latency view."""
    out_rows: list[dict[str, Any]] = []
    configs: list[ProposalConfig] = []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "power_slice.yaml"
        recipe.write_text(
            RECIPE.format(
                model=arm.model,
                backend=backend,
                task=arm.task,
                T=arm.T,
                rows=arm.rows,
                out=Path(tmp) / "run",
                seed=arm.seed,
            )
        )
        runtime = build_runtime(parse_configs(["--config", str(recipe)]), current_world())
        try:
            examples = spread(runtime.task.load(arm.split), arm.n)
            options = [runtime.task.options(e) for e in examples]
            chance = sum(1 / len(o) for o in options if o) / len(examples)  # open answers (math): 0
            common = dict(
                power_alpha=arm.alpha,
                max_new_tokens=arm.T,
                power_block_size=max(1, arm.T // 8),
                generation_batch_size=arm.rows,
            )
            label = f"{arm.model} {arm.task}/{arm.split}[{len(examples)}] T={arm.T}"
            pilot_examples = examples[: min(8, len(examples))]

            def pilot_tokens(cfg: ProposalConfig) -> float:
                samples = draw(runtime, cfg, pilot_examples, arm.seed + 1)[0]
                return sum(s.trace.cost.tokens_decoded for s in samples) / len(samples)

            def add(budget: int | None, name: str, cfg: ProposalConfig) -> dict[str, Any]:
                samples, wall = draw(runtime, cfg, examples, arm.seed)
                traces = [s.trace for s in samples]
                k = sum(s.reward for s in samples)
                row = {
                    "model": label,
                    "backend": backend,
                    "budget_xT": budget,
                    "sampler": name,
                    "accuracy": round(k / len(samples), 4),
                    "accuracy_ci95": wilson(k, len(samples)),
                    "chance": round(chance, 4),
                    "mean_alpha_logp": round(sum(arm.alpha * t.sum_logp for t in traces) / len(traces), 3),
                    "mean_logp": round(sum(t.sum_logp for t in traces) / len(traces), 3),
                    "tokens_per_sample": round(sum(t.cost.tokens_decoded for t in traces) / len(traces), 1),
                    "wall_s_per_sample": round(wall / len(traces), 4),
                    "answers": dict(sorted(Counter(str(s.prediction.extracted) for s in samples).items())),
                    "load": C.load(),
                }
                if cfg.proposal == "power_smc":
                    row["smc_resamples"] = round(sum(t.info["resamples"] for t in traces) / len(traces), 2)
                    row["smc_final_ess"] = round(sum(t.info["final_ess"] for t in traces) / len(traces), 3)
                out_rows.append(row)
                configs.append(cfg)
                print({k: v for k, v in row.items() if k != "answers"}, flush=True)
                return row

            draw(
                runtime, ProposalConfig(proposal="ancestral", **common), examples[: arm.rows], arm.seed + 2
            )  # warm-up, untimed
            base = add(None, "ancestral (tau 1)", ProposalConfig(proposal="ancestral", **common))
            low = add(
                None,
                "low temperature (tau 1/alpha)",
                ProposalConfig(proposal="ancestral", temperature=1 / arm.alpha, **common),
            )
            for K in arm.multiples:
                budget = K * base["tokens_per_sample"]  # K ancestral samples' worth of decoded tokens
                add(K, f"best-of-{K}", ProposalConfig(proposal="best_of_n", best_of_n=K, **common))
                for cut in ("uniform", "entropy"):
                    mh = dict(proposal="power_mh", power_cut=cut, **common)
                    spent = [pilot_tokens(ProposalConfig(power_mh_steps=N, **mh)) for N in (0, 1)]
                    steps = max(1, round((budget - spent[0]) / max(spent[1] - spent[0], 1.0)))
                    add(K, f"power_mh {cut} (N={steps})", ProposalConfig(power_mh_steps=steps, **mh))
                particles = max(
                    2, round(budget / max(low["tokens_per_sample"], 1.0))
                )  # a particle ~ a tau 1/alpha draw
                add(
                    K,
                    f"power_smc ({particles} particles)",
                    ProposalConfig(proposal="power_smc", smc_particles=particles, **common),
                )
            latency = examples[: min(arm.latency_n, len(examples))]
            for row, cfg in zip(out_rows, configs, strict=True):  # one question per call: its own batch width
                one = replace(cfg, generation_batch_size=width(cfg))
                row["latency_s"] = round(draw(runtime, one, latency, arm.seed)[1] / len(latency), 4)
                print({"sampler": row["sampler"], "latency_s": row["latency_s"]}, flush=True)
        finally:
            runtime.close()
    for row in out_rows:
        row["wall_x_ancestral"] = round(row["wall_s_per_sample"] / max(base["wall_s_per_sample"], 1e-9), 2)
        row["latency_x_ancestral"] = round(row["latency_s"] / max(base["latency_s"], 1e-9), 2)
    return out_rows

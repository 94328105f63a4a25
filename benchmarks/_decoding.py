"""Decoding helpers shared by the throughput, power-cost and memory benchmarks: chat prompts, the per-prompt
``model.generate`` loop and the hf backend's batched tokens/s (throughput), the published reference power-MH loop
(``ReferenceMH``: one ``model.generate`` per stage extension and per MH step, batch 1, uniform cut, cap = current
length, truncated comparison) and ``bench_power``, which runs it against fem's power_mh and ancestral sampling at
the same alpha, B, T, N and seeds.
"""

from __future__ import annotations

import math
import random
import time

import torch

from fem.configs import ProposalConfig
from fem.generation.base import SamplingParams
from fem.generation.hf import HFBackend
from fem.proposals import build_proposal

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?",
    "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. She has only half of the money. How much more does she need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow.",
    "Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices.",
    "Ken created a care package to send to his brother, who was away at boarding school. How heavy was it?",
]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        else:
            ids = tokenizer.encode(q)
        out.append(list(ids))
    return out


# ---------------------------------------------------------------------------------------------- throughput
def generate_loop_tps(model, tokenizer, prompts, max_new: int, seed: int) -> dict:
    torch.manual_seed(seed)
    tokens, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new,
                pad_token_id=tokenizer.pad_token_id,
            )
            tokens += out.shape[1] - ids.shape[1]
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def backend_tps(backend, prompts, batch: int, max_new: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tokens, t0 = 0, time.perf_counter()
    for start in range(0, len(prompts), batch):
        conts, stats = backend.generate(prompts[start : start + batch], SamplingParams(), max_new, generator=gen)
        tokens += stats.tokens_decoded
    wall = time.perf_counter() - t0
    return {"batch": batch, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


# ---------------------------------------------------------------------------------------------- reference loop
class ReferenceMH:
    """The published loop (Karan & Du ``mcmc_power_samp``): batch 1, ``model.generate`` per extension and MH step,
    raw logits -> alpha log p, processed scores -> log q, uniform cut, cap = current length, truncated sums."""

    def __init__(self, model, tokenizer, alpha: float, block: int, horizon: int, steps: int):
        self.model, self.tokenizer = model, tokenizer
        self.alpha, self.block, self.horizon, self.steps = alpha, block, horizon, steps
        self.eos = set(HFBackend(model, tokenizer).eos_token_ids)
        self.tokens_decoded = self.tokens_reencoded = self.mh_steps = self.accepts = 0

    def naive_temp(self, context: list[int], max_new: int):
        ids = torch.tensor([context])
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0 / self.alpha,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new,
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out.sequences[0, ids.shape[1] :].tolist()
        lp = [float(torch.log_softmax(out.logits[t][0].float(), -1)[tok]) for t, tok in enumerate(new)]
        lq = [float(torch.log_softmax(out.scores[t][0].float(), -1)[tok]) for t, tok in enumerate(new)]
        self.tokens_decoded += len(new)
        self.tokens_reencoded += len(context)
        return new, lp, lq

    def sample(self, prompt: list[int], rng: random.Random) -> list[int]:
        gen, lp, lq = [], [], []
        for k in range(math.ceil(self.horizon / self.block)):
            cap = min((k + 1) * self.block, self.horizon)
            if not gen or gen[-1] not in self.eos:
                new, a, b = self.naive_temp(prompt + gen, cap - len(gen))
                gen, lp, lq = gen + new, lp + a, lq + b
            for _ in range(self.steps):
                self.mh_steps += 1
                idx = rng.randrange(len(gen))
                new, a, b = self.naive_temp(prompt + gen[:idx], len(gen) - idx)
                m = len(new)
                log_r = (
                    sum(self.alpha * x for x in a)
                    + sum(lq[idx : idx + m])
                    - sum(self.alpha * x for x in lp[idx : idx + m])
                    - sum(b)
                )
                if math.log(rng.random() or 1e-300) < log_r:
                    self.accepts += 1
                    gen, lp, lq = gen[:idx] + new, lp[:idx] + a, lq[:idx] + b
            if any(t in self.eos for t in gen):
                break
        return gen


def bench_power(
    model,
    tokenizer,
    backend,
    prompts,
    samples: int,
    alpha: float,
    block: int,
    horizon: int,
    steps: int,
    seed: int,
    reference_prompts: int | None = None,
) -> dict:
    """``reference_prompts``: run the (sequential, batch-1) reference loop on the first prompts only; its chains are
    the same as in a full run (one rng, prompts in order) and its per-step figures need no more."""
    ref = ReferenceMH(model, tokenizer, alpha, block, horizon, steps)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in prompts[:reference_prompts]:
            for _ in range(samples):
                ref.sample(p, rng)
    ref_wall = time.perf_counter() - t0
    reference = {
        "wall_s": ref_wall,
        "mh_steps": ref.mh_steps,
        "tokens_decoded": ref.tokens_decoded,
        "tokens_reencoded": ref.tokens_reencoded,
        "acceptance": ref.accepts / max(ref.mh_steps, 1),
    }
    ours = {}
    for er in (True, False):
        cfg = ProposalConfig(
            proposal="power_mh",
            power_alpha=alpha,
            power_block_size=block,
            max_new_tokens=horizon,
            power_mh_steps=steps,
            power_cut="uniform",
            power_early_rejection=er,
            generation_batch_size=len(prompts) * samples,
        )
        prop = build_proposal(cfg, backend)
        t0 = time.perf_counter()
        traces = [t for g in prop.propose(prompts, samples, seed=seed) for t in g]
        wall = time.perf_counter() - t0
        mh = sum(t.cost.mh_steps for t in traces)
        ours["early_rejection" if er else "no_early_rejection"] = {
            "wall_s": wall,
            "mh_steps": mh,
            "tokens_decoded": sum(t.cost.tokens_decoded for t in traces),
            "tokens_reencoded": sum(t.cost.tokens_reencoded for t in traces),
            "tokens_encoded_total": prop.last_stats.tokens_encoded,
            "acceptance": sum(t.cost.mh_accepts for t in traces) / max(mh, 1),
            "mean_len": sum(t.num_tokens for t in traces) / len(traces),
        }
    anc_cfg = ProposalConfig(
        proposal="ancestral", max_new_tokens=horizon, generation_batch_size=len(prompts) * samples
    )
    t0 = time.perf_counter()
    anc = [t for g in build_proposal(anc_cfg, backend).propose(prompts, samples, seed=seed) for t in g]
    anc_wall = time.perf_counter() - t0
    best = ours["early_rejection"]
    per_step = lambda d, k: d[k] / max(d["mh_steps"], 1)  # noqa: E731
    n = len(prompts) * samples
    return {
        "settings": {
            "alpha": alpha,
            "block": block,
            "horizon": horizon,
            "steps": steps,
            "chains": n,
            "reference_chains": len(prompts[:reference_prompts]) * samples,
        },
        "reference": reference,
        "ours": ours,
        "ancestral": {"wall_s": anc_wall, "tokens_decoded": sum(t.num_tokens for t in anc)},
        "ratios": {
            "wall_per_mh_step_reference_over_ours": per_step(reference, "wall_s") / per_step(best, "wall_s"),
            "wall_per_mh_step_reference_over_ours_no_er": per_step(reference, "wall_s")
            / per_step(ours["no_early_rejection"], "wall_s"),
            "decoded_per_step_reference": per_step(reference, "tokens_decoded"),
            "decoded_per_step_ours": per_step(best, "tokens_decoded"),
            "reencoded_per_step_reference": per_step(reference, "tokens_reencoded"),
            "reencoded_per_step_ours": per_step(best, "tokens_reencoded"),
            "power_over_ancestral_tokens": (best["tokens_decoded"] / n)
            / max(sum(t.num_tokens for t in anc) / n, 1e-9),
            "power_over_ancestral_wall": best["wall_s"] / anc_wall,
        },
    }

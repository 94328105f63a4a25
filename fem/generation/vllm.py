"""``VLLMBackend``: the generation protocol (``base.GenerationBackend``) on a vLLM engine.

**Engine.** vLLM's offline engine in this process by default (TRL's colocate style; ``EngineOptions.in_process=False``
gives vLLM's own engine process), stepped by this backend through ``LLMEngine.add_request`` / ``step`` /
``abort_request``; ``vllm_engine`` builds it and lists the settings fem fixes.
It reads a Hugging Face folder of the same weights the runtime loaded (``fem.models.hf_model_dir``: the folder
itself, or the de-quantised GGUF saved once under ``$FEM_CACHE``); the runtime's transformers model stays loaded
for the M-step, which trains LoRA on it.

**Statistics contract** (``Continuation``), per sampled token:

- ``logq``: the sampled token's log-probability as vLLM's sampler returns it in ``processed_logprobs`` mode, i.e.
  ``log_softmax`` of the logits after temperature, top-k and top-p: the distribution the token was drawn from. The
  engine is built in that mode and the backend refuses an engine in another one. Greedy rows get ``logq = 0``
  (a deterministic proposal), as in the ``hf`` backend.
- ``logp`` and ``entropy``: from the raw float32 logits before any processing, read inside the sampler by
  ``vllm_stats.StatsTracker`` (a logits processor that changes nothing): ``log_softmax`` at temperature 1 over the
  whole vocabulary, the sampled token's entry, and ``-sum p log p``.

Both come out of the *same* forward pass that sampled the token: no teacher-forced scoring pass, no full-vocabulary
log-prob lists through vLLM's output path. A raw/processed mix-up (the bug class where ``logq`` equals ``logp``
whenever temperature != 1) is ruled out by construction and by ``tests/generation/vllm/test_vllm_statistics.py``.
``generate(stats=...)`` skips what the caller does not need: without ``logq`` no log-probs are requested from the
sampler; without ``logp`` and ``entropy`` the request is not tracked.

**Forced read-out.** ``next_token_logprobs`` sends each prefix as a one-token greedy request whose full base row the
tracker keeps: the prefix's full KV blocks come from vLLM's prefix cache (the prompt and rationale were just decoded),
only the tail is encoded, and the ``[vocab]`` row is one tensor copy (no per-entry log-prob objects, unlike
``logprobs=-1``). The protocol method is therefore kept as is: an option-token read-out (``allowed_token_ids`` or
``logprob_token_ids``) would save nothing measurable here and would mask the logits the contract reads.

**power_mh.** The proposal drives this backend through ``generate`` with a ``stop_callback`` (it is not a
``SupportsCachedGeneration`` backend): the proposals of one MH step are requests of one batch (chains in lockstep), each
from prompt + kept prefix, whose full KV blocks come from vLLM's prefix cache (32-token blocks on CPU:
``vllm_engine.options_from_configs``). ``Continuation.tokens_encoded`` is what vLLM computed (prefix length minus
``num_cached_tokens``), so a chain's re-encoded tokens count real work. **Exact early rejection** stays in fem's
process: the in-process engine steps only when the backend asks, so after each step the callback sees each row's new
token with complete statistics (one ``collective_rpc``, a direct call in-process) and a row whose partial ratio fell to
``log u`` is aborted before the next step: the same decisions as without early rejection (tested: the same traces)
and no token decoded past the one that decided. Sending ``u`` and ``alpha`` to the tracker (``extra_args``) and forcing
EOS there would save no forward pass (the deciding token is decoded either way) and would copy the ratio's cut-law term
(the entropy cut's ``log c(j|y)`` depends on the proposal's entropies) into vLLM's worker; with the engine in its own
process the abort may lag a few steps, which costs tokens but changes no decision (rows are truncated at the deciding
token).

**Seeding.** With a ``generator`` each row gets its own vLLM ``seed`` drawn from it, so a row's draws do not depend on
the batch; the engine schedules whole prompts (see ``vllm_engine``), which keeps seeded requests working for prompts
of any length.

**Adapters.** ``adapter_mode="merge"`` (the recipe default): ``load_adapter`` computes the adapted layers' weights
from the transformers model (``adapter_weights``: PEFT's delta, out of place), reloads the served model with
them in place (vLLM's ``reload_weights``, as TRL's colocate mode syncs weights) and resets the prefix cache;
unloading reloads the base weights. The engine then runs without LoRA layers: decoding with an adapter is as fast as
without one (vLLM's CPU LoRA kernels cost several times the base model's decode). An engine in its own process gets
the weights as raw bytes (``vllm_worker.pack_weights``). ``"lora"``: each adapter is registered under a new LoRA
name and id (a reused name could be served from stale prefix-cache blocks) and the previous one removed; every later
request carries the last loaded adapter.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # before vLLM is imported: INFO logs every request

from vllm import SamplingParams as VLLMSamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.lora.request import LoRARequest  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402

from fem.generation.adapter_weights import full_weights, merged_weights  # noqa: E402
from fem.generation.base import STATS, Continuation, DecodeStats, SamplingParams, StopCallback  # noqa: E402
from fem.generation.hf import eos_ids_of  # noqa: E402
from fem.generation.vllm_decode import DecodeRun  # noqa: E402
from fem.generation.vllm_engine import EngineOptions, create_engine, options_from_configs, shutdown_engine  # noqa: E402
from fem.generation.vllm_env import lora_rank_bound, weights_dtype  # noqa: E402
from fem.generation.vllm_stats import EXTRA_ARGS_KEY, row_tensor  # noqa: E402
from fem.generation.vllm_worker import pack_weights  # noqa: E402


class VLLMBackend:
    """GenerationBackend over a vLLM engine (module docstring: engine, statistics, read-out, seeding, adapters)."""

    name = "vllm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_dir: str,
        options: EngineOptions | None = None,
        eos_token_ids: Sequence[int] | None = None,
    ):
        self.tokenizer = tokenizer
        self.eos_token_ids = (
            frozenset(int(i) for i in eos_token_ids) if eos_token_ids is not None else eos_ids_of(model, tokenizer)
        )
        if not self.eos_token_ids:
            raise ValueError("the tokenizer and the model's generation config name no EOS token")
        self.options = options or EngineOptions()
        self.model_dir = str(model_dir)
        self.llm = create_engine(
            self.model_dir, self.options, weights_dtype(model) if model is not None else "float32"
        )
        self.engine = self.llm.llm_engine
        mode = self.engine.model_config.logprobs_mode
        if mode != "processed_logprobs":
            raise RuntimeError(f"the vLLM engine returns {mode}; fem's logq needs processed_logprobs")
        self.vocab_size = int(self.engine.model_config.get_vocab_size())
        self.max_model_len = int(self.engine.model_config.max_model_len)
        self.readout_tokens_encoded = 0  # prefix tokens next_token_logprobs computed (the rest hit the prefix cache)
        self._request_ids = itertools.count()
        self._lora_ids = itertools.count(1)
        self._lora: Any = None
        self._model = model  # the base weights merged adapters are computed from (adapter_mode="merge")
        self._merged = False
        self._adapter_path: str | None = None

    @classmethod
    def from_configs(cls, configs: Any, model: Any, tokenizer: Any, model_dir: str) -> VLLMBackend:
        """The backend a recipe asks for (``base.BuiltFromConfigs``): engine options from its ``vllm_*`` keys
        (``vllm_engine.options_from_configs``), weights from ``model_dir`` (a Hugging Face folder of the model fem
        loaded)."""
        return cls(model, tokenizer, model_dir=model_dir, options=options_from_configs(configs, model))

    # ------------------------------------------------------------------ basics
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    @property
    def adapter_path(self) -> str | None:
        return self._adapter_path

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix block (a benchmark's cold start; the next requests encode their whole prompts)."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache (requests still running)")

    def close(self) -> None:
        """Stop the engine and free its memory (the backend is unusable afterwards)."""
        shutdown_engine(self.llm)

    def _check_prefix(self, prefix: Sequence[int], new_tokens: int) -> None:
        if len(prefix) == 0:
            raise ValueError("every prefix needs at least one token")
        if len(prefix) + new_tokens > self.max_model_len:
            raise ValueError(
                f"a prefix of {len(prefix)} tokens plus {new_tokens} new tokens exceeds the vLLM engine's "
                f"max_model_len {self.max_model_len}: raise vllm_max_model_len"
            )

    def _sampling_params(self, **kwargs: Any) -> VLLMSamplingParams:
        kwargs.setdefault("output_kind", RequestOutputKind.DELTA)
        kwargs.setdefault("stop_token_ids", sorted(self.eos_token_ids))
        # ignore_eos: vLLM would also stop on the EOS of the model's generation config (even with
        # generation_config="vllm"); a request stops on the backend's eos_token_ids only, as in the hf backend
        return VLLMSamplingParams(detokenize=False, skip_special_tokens=False, ignore_eos=True, **kwargs)

    def _wait(self, pending: set[str]) -> list[Any]:
        """Step the engine until the requests in ``pending`` finished; their final outputs."""
        done = []
        while pending:
            for req in self.engine.step():
                if req.request_id in pending and req.finished:
                    pending.discard(req.request_id)
                    done.append(req)
        return done

    def _add(self, prefix: Sequence[int], params: Any, request_id: str) -> None:
        ids = [int(t) for t in prefix]  # a wrong type or id fails here, not inside an engine step (which would
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):  # kill it: vLLM checks ids only with a tokenizer)
            raise ValueError(
                f"prefix of {request_id} holds a token id outside the vocabulary (size {self.vocab_size})"
            )
        self.engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), params, lora_request=self._lora)

    def _new_id(self) -> str:
        return f"fem-{next(self._request_ids)}"

    def _collect(self, keys: list[str], release: bool) -> dict[str, Any]:
        """The tracker's new (logp, entropy, row) per request key (``vllm_stats.StatsTracker.collect``)."""
        if not keys:
            return {}
        return self.llm.collective_rpc("fem_collect_stats", args=(keys, release))[0]

    def _cleanup(self, request_ids: list[str], tracked: list[str]) -> None:
        """After an error: abort the requests (those already finished are ignored) and drop their statistics."""
        with contextlib.suppress(Exception):
            self.engine.abort_request(list(request_ids))
        with contextlib.suppress(Exception):
            self._collect(tracked, release=True)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
        stats: Collection[str] | None = None,
    ) -> tuple[list[Continuation], DecodeStats]:
        """Decode one continuation per prefix until EOS, the row's ``max_new_tokens`` or the callback.
        ``stats`` (subset of ``base.STATS``, None = all): statistics not asked for are left empty."""
        n = len(prefixes)
        caps = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
        if len(caps) != n:
            raise ValueError(f"max_new_tokens has {len(caps)} entries for {n} prefixes")
        want = STATS if stats is None else frozenset(stats)
        if not want <= STATS:
            raise ValueError(f"unknown statistics {sorted(want - STATS)} (use {sorted(STATS)})")
        greedy = params.temperature == 0
        seeds: list[int | None] = [None] * n
        if generator is not None and not greedy:
            seeds = [int(torch.randint(0, 2**62, (1,), generator=generator)) for _ in range(n)]  # row i: i-th draw
        for i in range(n):
            if caps[i] > 0:
                self._check_prefix(prefixes[i], caps[i])
        run = DecodeRun(self, [Continuation() for _ in range(n)], caps, want, greedy, stop_callback)
        try:
            for i in range(n):
                if caps[i] <= 0:
                    continue
                request_id = self._new_id()
                sp = self._sampling_params(
                    max_tokens=caps[i],
                    temperature=float(params.temperature),
                    top_k=0 if greedy else int(params.top_k),
                    top_p=1.0 if greedy else float(params.top_p),
                    seed=seeds[i],
                    logprobs=0 if ("logq" in want and not greedy) else None,
                    extra_args={EXTRA_ARGS_KEY: {"key": request_id}} if run.track else None,
                )
                run.row_of[request_id] = i  # before add_request: the cleanup must see every request sent
                self._add(prefixes[i], sp, request_id)
            run.loop()
        except BaseException:
            self._cleanup(list(run.row_of), list(run.row_of) if run.track else [])
            raise
        run.finish()
        for i, cont in enumerate(run.conts):
            if caps[i] <= 0:
                cont.tokens_encoded = 0  # no request was sent for this row
        return run.conts, run.stats

    # ------------------------------------------------------------------ scoring and read-out
    def score(self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Base log p (temperature 1) of each continuation token given its prefix, by teacher forcing: a greedy
        request per row whose logits the tracker turns, after reading them, into a one-hot on the given token (the
        prefix comes from the prefix cache; vLLM's ``prompt_logprobs`` are not used: they fail with LoRA on CPU)."""
        out: list[list[float]] = [[] for _ in prefixes]
        row_of: dict[str, int] = {}
        try:
            for i, (prefix, cont) in enumerate(zip(prefixes, continuations)):
                if len(cont) == 0:
                    continue
                self._check_prefix(prefix, len(cont))
                request_id = self._new_id()
                row_of[request_id] = i
                force = [int(t) for t in cont]
                if not all(0 <= t < self.vocab_size for t in force):
                    raise ValueError(
                        f"continuation {i} holds a token id outside the vocabulary (size {self.vocab_size})"
                    )
                sp = self._sampling_params(
                    max_tokens=len(force),
                    temperature=0.0,
                    stop_token_ids=[],
                    output_kind=RequestOutputKind.FINAL_ONLY,
                    extra_args={EXTRA_ARGS_KEY: {"key": request_id, "force": force}},
                )
                self._add(prefix, sp, request_id)
            self._wait(set(row_of))
            for request_id, got in self._collect(list(row_of), release=True).items():
                i = row_of[request_id]
                out[i] = list(got[0]) if got is not None else []
                if len(out[i]) != len(continuations[i]):
                    raise RuntimeError(f"vLLM backend: scoring {request_id} returned {len(out[i])} log-probs")
        except BaseException:
            self._cleanup(list(row_of), list(row_of))
            raise
        return out

    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Base next-token log-probabilities after each prefix, ``[batch, vocab]`` float32 on CPU (one-token
        requests whose prefixes hit the prefix cache; the tracker keeps each full row)."""
        keys: list[str] = []
        try:
            for prefix in prefixes:
                self._check_prefix(prefix, 1)
                request_id = self._new_id()
                keys.append(request_id)
                sp = self._sampling_params(
                    max_tokens=1,
                    temperature=0.0,
                    output_kind=RequestOutputKind.FINAL_ONLY,
                    extra_args={EXTRA_ARGS_KEY: {"key": request_id, "row": True}},
                )
                self._add(prefix, sp, request_id)
            for req in self._wait(set(keys)):
                if req.num_cached_tokens is not None:
                    self.readout_tokens_encoded += len(req.prompt_token_ids or []) - int(req.num_cached_tokens)
            rows = self._collect(keys, release=True)
        except BaseException:
            self._cleanup(keys, keys)
            raise
        if not keys:
            return torch.empty(0, self.vocab_size)
        missing = [k for k in keys if rows.get(k) is None or rows[k][2] is None]
        if missing:
            raise RuntimeError(f"vLLM backend: no next-token row for {len(missing)} read-out request(s)")
        return torch.stack([row_tensor(rows[k][2]) for k in keys])

    # ------------------------------------------------------------------ adapters
    def load_adapter(self, path: str) -> None:
        """Serve the PEFT adapter at ``path`` from now on (the previous one is dropped): merged into the engine's
        weights (``adapter_mode="merge"``) or under a new LoRA id (``"lora"``). Either way the prefix cache holds no
        block computed with other weights afterwards."""
        folder = Path(path).resolve()
        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder} holds no adapter_config.json (not a PEFT adapter)")
        if self.options.adapter_mode == "merge":
            self._load_merged(folder)
        else:
            self._load_lora(folder, json.loads(config_file.read_text()))
        self._adapter_path = str(path)

    def _load_merged(self, folder: Path) -> None:
        if self._model is None:
            raise RuntimeError("adapter_mode merge needs the transformers model the backend was built with")
        merged = merged_weights(self._model, folder)
        self._push_weights(full_weights(self._model, merged))  # every weight: the previous adapter's are replaced
        self._merged = True

    def _load_lora(self, folder: Path, adapter_config: dict[str, Any]) -> None:
        rank = int(adapter_config.get("r", 0))
        if rank > lora_rank_bound(self.options.max_lora_rank):
            raise ValueError(f"adapter rank {rank} exceeds the engine's max_lora_rank {self.options.max_lora_rank}")
        wrapped = self.options.lora_target_modules
        targets = adapter_config.get("target_modules") or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        # PEFT saves short names ("q_proj") or full module paths ("model.layers.0.self_attn.q_proj"); vLLM wraps by
        # the last component
        outside = sorted({t for t in targets if t.rpartition(".")[2] not in wrapped}) if wrapped is not None else []
        if outside:
            raise ValueError(
                f"the adapter targets {outside}, which the engine serves without LoRA (it wraps {wrapped})"
            )
        lora_id = next(self._lora_ids)
        request = LoRARequest(f"fem-adapter-{lora_id}", lora_id, str(folder))
        self.engine.add_lora(request)
        self.unload_adapter()
        self._lora = request

    def _push_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Reload the served model from the checkpoint ``weights`` in place (vLLM's ``reload_weights``, which redoes
        its post-load weight processing) and forget every cached prefix (computed with the old weights)."""
        portable = not self.options.in_process  # vLLM's serialisation would turn tensors into lists
        self.llm.collective_rpc("fem_reload_weights", args=(pack_weights(weights, portable), portable))
        self.reset_prefix_cache()

    def unload_adapter(self) -> None:
        """Back to the base weights."""
        if self._lora is not None:
            self.engine.remove_lora(self._lora.lora_int_id)
        if self._merged:
            self._push_weights(full_weights(self._model))
        self._lora = None
        self._merged = False
        self._adapter_path = None

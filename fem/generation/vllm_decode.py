"""One ``VLLMBackend.generate`` call in flight: step the engine until its requests end, token by token.

Tokens and ``logq`` arrive in the engine's per-step outputs (``RequestOutputKind.DELTA``); base ``logp`` and entropy
come from the statistics tracker (``vllm_stats``) by ``collective_rpc``: after every step when a ``stop_callback``
needs them (the callback sees complete statistics for every token it is shown), otherwise once at the end. A row the
callback stops is aborted before the next step (in-process engine) and truncated at the token that stopped it.
"""

from __future__ import annotations

from typing import Any

from fem.generation.base import Continuation, DecodeStats


class DecodeRun:
    """One ``generate`` call in flight: steps the engine until its requests end and fills their continuations."""

    def __init__(self, backend: Any, conts, caps, want, greedy, stop_callback):
        self.backend, self.conts, self.caps, self.want = backend, conts, caps, want
        self.greedy, self.stop_callback = greedy, stop_callback
        self.track = bool(want & {"logp", "entropy"})
        self.row_of: dict[str, int] = {}
        self.tracked: dict[str, tuple[list[float], list[float]]] = {}  # request -> base (logp, entropy) by position
        self.stats = DecodeStats()

    def loop(self) -> None:
        eos = self.backend.eos_token_ids
        active = set(self.row_of)
        while active:
            arrived = []
            for out in self.backend.engine.step():
                if out.request_id not in active:
                    continue
                cont = self.conts[self.row_of[out.request_id]]
                completion = out.outputs[0]
                tokens = list(completion.token_ids)
                if cont.tokens_encoded is None and out.num_cached_tokens is not None:
                    cont.tokens_encoded = len(out.prompt_token_ids or []) - int(out.num_cached_tokens)
                    self.stats.tokens_encoded += cont.tokens_encoded
                logq = [0.0] * len(tokens)
                if "logq" in self.want and not self.greedy:
                    logq = [entry[t].logprob for entry, t in zip(completion.logprobs or [], tokens)]
                    if len(logq) != len(tokens):
                        raise RuntimeError(f"vLLM returned no log-prob for a token of {out.request_id}")
                arrived.append((out.request_id, tokens, logq))
                if out.finished:
                    active.discard(out.request_id)
            self.stats.forward_passes += 1
            if self.stop_callback is not None and self.track:
                self._pull([r for r, tokens, _ in arrived if tokens], release=False)
            stopped = []
            for request_id, tokens, logq in arrived:
                i = self.row_of[request_id]
                cont = self.conts[i]
                for token, lq in zip(tokens, logq):
                    cont.token_ids.append(token)
                    self.stats.tokens_decoded += 1
                    if "logq" in self.want:
                        cont.logq.append(lq)
                    if token in eos:
                        cont.finished = True
                        break
                    if self.stop_callback is not None:
                        self._sync(request_id, cont)
                        if self.stop_callback(i, cont):
                            cont.stopped_early = True
                            stopped.append(request_id)
                            break
                    if len(cont.token_ids) >= self.caps[i]:
                        break
            if stopped:
                self.backend.engine.abort_request(stopped)
                active.difference_update(stopped)

    def finish(self) -> None:
        """Fetch the statistics not fetched yet, release the tracker's records, check every row is complete."""
        if self.track:
            self._pull(list(self.row_of), release=True)
        for request_id, i in self.row_of.items():
            cont = self.conts[i]
            if self.track:
                self._sync(request_id, cont)
            for name in self.want:
                if len(getattr(cont, name)) != len(cont.token_ids):
                    raise RuntimeError(f"vLLM backend: {name} missing for request {request_id}")

    def _pull(self, request_ids: list[str], release: bool) -> None:
        for request_id, got in self.backend._collect(request_ids, release).items():
            if got is not None:
                logp, entropy = self.tracked.setdefault(request_id, ([], []))
                logp.extend(got[0])
                entropy.extend(got[1])

    def _sync(self, request_id: str, cont: Continuation) -> None:
        """Bring ``cont.logp`` / ``cont.entropy`` up to its tokens (the engine may have computed more positions)."""
        logp, entropy = self.tracked.get(request_id, ([], []))
        n = len(cont.token_ids)
        for name, values in (("logp", logp), ("entropy", entropy)):
            if name not in self.want:
                continue
            if len(values) < n:
                raise RuntimeError(
                    f"vLLM backend: the statistics tracker has no {name} for token {n - 1} of {request_id}"
                )
            mine = getattr(cont, name)
            mine.extend(values[len(mine) : n])

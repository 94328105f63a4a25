import pytest
import torch

from fem.generation.base import Continuation, DecodeStats


class FakeBackend:
    """Character-level backend: token id = ord(char). ``prefer`` maps a character to the log-prob weight it gets
    at every position; ``script`` is the text greedy decoding produces after any prefix."""

    vocab_size = 256
    eos_token_ids = frozenset({0})

    def __init__(self, prefer: dict[str, float] | None = None, script: str = ""):
        self.prefer = prefer or {}
        self.script = script
        self.queries: list[list[int]] = []

    def encode(self, text):
        return [ord(c) % 256 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def next_token_logprobs(self, prefixes):
        self.queries.extend(list(p) for p in prefixes)
        logits = torch.zeros(len(prefixes), self.vocab_size)
        for ch, w in self.prefer.items():
            logits[:, ord(ch)] = w
        return torch.log_softmax(logits, dim=-1)

    def generate(self, prefixes, params, max_new_tokens, *, generator=None, stop_callback=None):
        out = []
        for row, _ in enumerate(prefixes):
            cont = Continuation()
            for ch in (self.script + "\0")[
                : max_new_tokens if isinstance(max_new_tokens, int) else max_new_tokens[row]
            ]:
                cont.token_ids.append(ord(ch))
                cont.logp.append(0.0)
                if ch == "\0":
                    cont.finished = True
                    break
                if stop_callback and stop_callback(row, cont):
                    cont.stopped_early = True
                    break
            out.append(cont)
        return out, DecodeStats()


@pytest.fixture
def fake_backend():
    return FakeBackend

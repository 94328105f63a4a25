"""A user proposal for the eval load test (tests/reliability/test_load.py), plugged in by dotted path
``canned_proposal.CannedProposal`` (this directory on PYTHONPATH). It generates nothing: it decodes each prompt,
reads the tag the test wrote into the example (``MATH-01234`` / ``CODE-00042``) and returns the canned completion
that ``math_kind`` / ``code_kind`` assign to that row and sample, so the test knows every expected count exactly.

``FEM_CANNED_FAIL=KIND@TAG`` makes it misbehave on one row: ``raise`` (an exception), ``short`` (one trace too
few for that prompt), ``missing`` (no list at all for that prompt).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from fem.proposals.base import Trace

TAG = re.compile(r"\b(MATH|CODE)-(\d{5})\b")

# math rows: answer = 7 * row + 3; (row, sample) -> kind, a fixed uneven mix
MATH_KINDS = (
    "correct",
    "wrong",
    "correct",
    "unparseable",
    "correct_noisy",  # NUL, emoji, a lone surrogate around a correct answer
    "garbage",  # an answer is written but is not math ("The answer is ???"): parsed, wrong
    "correct",
    "truncated",  # \boxed{ never closed: unparsed
    "wrong",
    "empty",  # empty completion: unparsed
    "correct_long",  # 50 KB of rationale, then the answer
)
MATH_UNPARSED = {"unparseable", "truncated", "empty"}
MATH_CORRECT = {"correct", "correct_noisy", "correct_long"}


def math_answer(row: int) -> int:
    return 7 * row + 3


def math_kind(row: int, sample: int) -> str:
    return MATH_KINDS[(row * 5 + sample * 3) % len(MATH_KINDS)]


def math_completion(row: int, sample: int) -> str:
    kind, n = math_kind(row, sample), math_answer(row)
    return {
        "correct": f"Add them up. The answer is \\boxed{{{n}}}.",
        "wrong": f"I think it is \\boxed{{{n + 1}}}.",
        "unparseable": "Honestly I cannot tell, sorry.",
        "correct_noisy": f"\x00 \U0001f642 \ud800 so the answer is \\boxed{{{n}}}",
        "garbage": "The answer is ???",
        "truncated": f"So we get \\boxed{{{n}",  # cut mid-answer (no "answer is" before it)
        "empty": "",
        "correct_long": "step. " * 8000 + f"\\boxed{{{n}}}",
    }[kind]


# code rows (MBPP-style, one test `assert f_ROW(2) == 4`): row -> kind
CODE_KINDS = (
    "correct",
    "wrong",
    "empty",
    "whitespace",
    "syntax_error",
    "raise",
    "abort",  # SIGABRT: the program process dies of a signal
    "memory_bomb",
    "fork_bomb",
    "output_flood",
    "kill_parent",
    "correct_bare",  # no code fence: the whole completion is the program
)
CODE_HANG = "hang"  # sleeps past the sandbox's 10 s wall clock (one row only: it costs 10 s)
CODE_UNPARSED = {"empty", "whitespace"}
CODE_CORRECT = {"correct", "correct_bare"}


def code_kind(row: int, hang_row: int) -> str:
    return CODE_HANG if row == hang_row else CODE_KINDS[row % len(CODE_KINDS)]


def code_completion(row: int, hang_row: int) -> str:
    f = f"f_{row:05d}"
    body = {
        "correct": f"def {f}(x):\n    return 2 * x\n",
        "wrong": f"def {f}(x):\n    return x + 3\n",
        "syntax_error": f"def {f}(x) return 2 * x\n",
        "raise": f"def {f}(x):\n    raise RuntimeError('model code crashed')\n",
        "abort": f"import os\nos.abort()\ndef {f}(x):\n    return 2 * x\n",
        "memory_bomb": f"blob = bytearray(64 * 1024 ** 3)\ndef {f}(x):\n    return 2 * x\n",
        "fork_bomb": f"import os\nwhile True:\n    os.fork()\ndef {f}(x):\n    return 2 * x\n",
        "output_flood": f"import sys\nwhile True:\n    sys.stdout.write('A' * 65536)\ndef {f}(x):\n    return 2 * x\n",
        "kill_parent": f"import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef {f}(x):\n    return 2 * x\n",
        CODE_HANG: f"import time\ntime.sleep(3600)\ndef {f}(x):\n    return 2 * x\n",
    }
    kind = code_kind(row, hang_row)
    if kind == "empty":
        return ""
    if kind == "whitespace":
        return "  \n\t\n"
    if kind == "correct_bare":
        return f"def {f}(x):\n    return x * 2\n"
    return f"Here is the code.\n```python\n{body[kind]}```\n"


class CannedProposal:
    """``propose`` returns the canned completions of the tagged rows (see the module doc)."""

    name = "canned"

    def __init__(self, config, backend):
        self.backend = backend
        self.hang_row = int(os.environ.get("FEM_CANNED_HANG_ROW", "-1"))
        kind, _, tag = os.environ.get("FEM_CANNED_FAIL", "").partition("@")
        self.fail_kind, self.fail_tag = kind, tag

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        out: list[list[Trace]] = []
        for prompt in prompts:
            match = TAG.search(self.backend.decode(list(prompt)))
            if match is None:
                raise ValueError("prompt carries no MATH-/CODE- tag")
            family, row = match.group(1), int(match.group(2))
            texts = [
                math_completion(row, s) if family == "MATH" else code_completion(row, self.hang_row)
                for s in range(num_samples)
            ]
            if match.group(0) == self.fail_tag:
                if self.fail_kind == "raise":
                    raise RuntimeError(f"canned proposal failure on {self.fail_tag}")
                if self.fail_kind == "missing":
                    continue
                if self.fail_kind == "short":
                    texts = texts[:-1]
            out.append([Trace(token_ids=[], text=t, logp=[], finished=True) for t in texts])
        return out

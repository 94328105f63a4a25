"""Code generation: HumanEval and MBPP. A completion passes when the program and its tests exit 0 in the sandbox.

Extraction: the first fenced code block that defines the entry point (else the first fenced block, else the
whole completion). For HumanEval a completion that does not define the entry point is taken as the function
body and appended to the prompt. Metric: unbiased pass@k (Chen et al. 2021) for every k up to the number of
samples per example (1, and the largest).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar

from fem import metrics as M
from fem.sandbox import SandboxConfig, run_program

from .base import Example, Prediction
from .common import DataTask, group_by_example
from .loading import Record, Source

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_blocks(text: str) -> list[str]:
    """Fenced code blocks of ``text`` (an unclosed last block runs to the end)."""
    return [b for b in _FENCE.findall(text or "") if b.strip()]


class CodeTask(DataTask):
    """A program-synthesis task; ``example.answer`` is the reference program."""

    answer_cue: ClassVar[str] = "```python\n"
    answer_markers: ClassVar[tuple[str, ...]] = ("```",)
    forced_stop: ClassVar[str] = "```"
    forced_max_new_tokens: ClassVar[int] = 512
    sandbox: SandboxConfig = SandboxConfig(timeout_s=10.0, cpu_s=10)

    def entry_point(self, example: Example) -> str:
        return str(example.fields["entry_point"])

    def extract(self, completion: str) -> str | None:
        """The code of the completion (see module doc); None when it is empty."""
        blocks = code_blocks(completion)
        if blocks:
            defining = [b for b in blocks if re.search(r"^\s*def\s+\w+", b, re.MULTILINE)]
            return (defining or blocks)[0]
        text = (completion or "").strip("\n")
        return text if text.strip() else None

    def program(self, code: str, example: Example) -> str:
        raise NotImplementedError

    def reward(self, extracted: Any | None, example: Example) -> float:
        """1 when the tests ran to their end: exit status 0 *and* a fresh random token printed after the tests (so a
        completion that exits with status 0 before the tests run, e.g. ``sys.exit(0)``, earns nothing)."""
        if extracted is None:
            return 0.0
        token = secrets.token_hex(16)
        program = self.program(str(extracted), example) + f"\nprint({token!r})\n"
        result = run_program(program, self.sandbox)
        return 1.0 if result.passed and result.stdout_tail.rstrip().endswith(token) else 0.0

    def answer_text(self, example: Example) -> str:
        return f"{example.answer.rstrip()}\n```"

    def hint_text(self, example: Example) -> str:
        return str(example.answer).rstrip()

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        groups = group_by_example(predictions)
        n = min((len(g) for g in groups.values()), default=0)
        out: dict[str, Any] = {
            "n": len(predictions),
            "examples": len(groups),
            "accuracy": M.accuracy([p.reward for p in predictions]),
        }
        for k in sorted({1, n} - {0}):
            out[f"pass@{k}"] = M.mean_pass_at_k([[p.reward for p in g[:n]] for g in groups.values()], k)
        out["unparsed"] = sum(1 for p in predictions if not p.parsed)
        return out


class HumanEvalTask(CodeTask):
    """HumanEval (164 problems; eval only). The prompt shows the signature and docstring."""

    name: ClassVar[str] = "humaneval"
    required_fields: ClassVar[tuple[str, ...]] = ("id", "prompt", "entry_point", "canonical_solution", "test")
    plain_template: ClassVar[str] = "code_humaneval.txt"
    hinted_template: ClassVar[str] = "code_humaneval_hinted.txt"
    sources = {
        "eval": Source(
            ("humaneval/HumanEval.jsonl.gz",),
            {
                "id": "task_id",
                "prompt": "prompt",
                "entry_point": "entry_point",
                "canonical_solution": "canonical_solution",
                "test": "test",
            },
        )
    }

    def make_example(self, record: Record, split: str) -> Example | None:
        fields = {k: str(record[k]) for k in ("prompt", "entry_point", "test")}
        return Example(
            id=str(record["id"]), answer=fields["prompt"] + str(record["canonical_solution"]), fields=fields
        )

    def program(self, code: str, example: Example) -> str:
        prompt = example.fields["prompt"]
        if not re.search(rf"^\s*def\s+{re.escape(self.entry_point(example))}\s*\(", code, re.MULTILINE):
            code = prompt + code  # a bare function body
        else:
            header = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
            code = header + "\n" + code
        return f"{code}\n\n{example.fields['test']}\n\ncheck({self.entry_point(example)})\n"

    def wrong_answer_text(self, example: Example) -> str:
        return example.fields["prompt"] + "    raise AssertionError('deliberately wrong')\n```"


class MBPPTask(CodeTask):
    """MBPP: eval = sanitized MBPP test ids 11-510 (257); train = full MBPP train ids 601-974 (374)."""

    name: ClassVar[str] = "mbpp"
    required_fields: ClassVar[tuple[str, ...]] = ("id", "text", "code", "tests")
    plain_template: ClassVar[str] = "code_mbpp.txt"
    hinted_template: ClassVar[str] = "code_mbpp_hinted.txt"
    sources = {
        "eval": Source(
            ("mbpp/sanitized-mbpp.json",),
            {"id": "task_id", "text": "prompt", "code": "code", "tests": "test_list", "setup": "test_imports"},
            select=lambda r: 11 <= int(r["id"]) <= 510,
        ),
        "train": Source(
            ("mbpp/mbpp.jsonl",),
            {"id": "task_id", "text": "text", "code": "code", "tests": "test_list", "setup": "test_setup_code"},
            select=lambda r: 601 <= int(r["id"]) <= 974,
        ),
    }

    def make_example(self, record: Record, split: str) -> Example | None:
        tests = record["tests"] if isinstance(record["tests"], list) else [record["tests"]]
        setup = record.get("setup") or ""
        setup = "\n".join(setup) if isinstance(setup, list) else str(setup)
        match = (
            re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
            if tests
            else None
        )
        fields = {
            "text": str(record["text"]).strip(),
            "tests": [str(t) for t in tests],
            "setup": setup,
            "entry_point": match.group(1) if match else "",
        }
        return Example(id=f"mbpp-{record['id']}", answer=str(record["code"]).replace("\r\n", "\n"), fields=fields)

    def template_fields(self, example: Example) -> dict[str, Any]:
        return {
            "text": example.fields["text"],
            "tests": "\n".join(example.fields["tests"][:1]),
            "entry_point": example.fields["entry_point"],
        }

    def program(self, code: str, example: Example) -> str:
        # setup after the code: MBPP's test_setup_code may use classes the solution defines (task 927)
        return "\n".join([code, "", example.fields["setup"], *example.fields["tests"], ""])

    def wrong_answer_text(self, example: Example) -> str:
        name = example.fields["entry_point"] or "solution"
        return f"def {name}(*args, **kwargs):\n    raise AssertionError('deliberately wrong')\n```"

"""Code generation: HumanEval and MBPP. A completion passes when the dataset's tests pass against it in the sandbox.

Reward: the model's program and the dataset's tests run in separate jailed processes (``fem.sandbox.run_tests``):
the tests call the program's functions through proxies that carry plain data only, so the program can neither
read the tests nor hand them an object that compares equal to anything; the verdict comes from the tests'
process, and the program must also exit with status 0. Without bubblewrap, rewards are refused (one line naming
the fix) unless ``FEM_SANDBOX`` accepts the weaker fallback; which sandbox is used is logged when examples load.

Extraction: the first fenced code block that defines the entry point (else the first fenced block, else the
whole completion). For HumanEval a completion that does not define the entry point is taken as the function
body and appended to the prompt. Metric: unbiased pass@k (Chen et al. 2021) for every k up to the number of
samples per example (1, and the largest).
"""

from __future__ import annotations

import ast
import builtins
import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from fem import metrics as M
from fem.sandbox import SandboxConfig, TestSuite, describe, run_tests

from .base import Example, Prediction
from .common import DataTask, group_by_example
from .loading import Record, Source

log = logging.getLogger("fem.tasks.code")
_announced: set[str] = set()
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
        """The program the model's ``code`` becomes (it runs alone, without the tests)."""
        raise NotImplementedError

    def test_suite(self, example: Example) -> TestSuite:
        """The dataset's tests for ``example``, with the names they take from the program."""
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        """The split's examples. Logs once per process the sandbox its rewards use (``fem.sandbox.describe``), as a
        warning when they would be refused: the first reward then raises ``SandboxUnavailable`` (one line naming
        the fix) and no program runs unconfined. Loading itself runs no code, so ``fem sample`` still works."""
        line = describe(self.sandbox)
        if line not in _announced:
            _announced.add(line)
            if line.startswith("REFUSED"):
                log.warning("code sandbox: %s (the first code reward will stop the run)", line)
            elif not line.startswith("FALLBACK"):  # the fallback is announced by fem.sandbox itself
                log.info("code sandbox: %s", line)
        return super().load(split)

    def reward(self, extracted: Any | None, example: Example) -> float:
        """1 when every test of the example passed against the program and the program exited with status 0
        (a program that exits early, e.g. ``sys.exit(0)``, or after the tests with a non-zero status earns 0).
        Raises ``SandboxUnavailable`` when the sandbox ``self.sandbox`` asks for cannot run here."""
        if extracted is None:
            return 0.0
        result = run_tests(self.program(str(extracted), example), self.test_suite(example), self.sandbox)
        return 1.0 if result.passed else 0.0

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
    text_fields: ClassVar[tuple[str, ...]] = ("prompt", "entry_point", "canonical_solution", "test")
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
            return prompt + code  # a bare function body
        header = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
        return header + "\n" + code

    def test_suite(self, example: Example) -> TestSuite:
        """``check(entry_point)`` after the prompt (its helpers, e.g. ``poly``, come from the dataset, not the
        program); only the entry point is the program's."""
        entry = self.entry_point(example)
        return TestSuite(f"{example.fields['test']}\n\ncheck({entry})\n", (entry,), prelude=example.fields["prompt"])

    def wrong_answer_text(self, example: Example) -> str:
        return example.fields["prompt"] + "    raise AssertionError('deliberately wrong')\n```"


class MBPPTask(CodeTask):
    """MBPP: eval = sanitized MBPP test ids 11-510 (257); train = full MBPP train ids 601-974 (374)."""

    name: ClassVar[str] = "mbpp"
    required_fields: ClassVar[tuple[str, ...]] = ("id", "text", "code", "tests")
    text_fields: ClassVar[tuple[str, ...]] = ("text", "code")
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
        return code

    def test_suite(self, example: Example) -> TestSuite:
        """The setup code and the assert lines; every name they use but do not define is the program's (the entry
        point, and e.g. the ``Node`` class task 927's setup builds trees with)."""
        code = "\n".join([example.fields["setup"], *example.fields["tests"], ""])
        return TestSuite(code, program_names(code, example.fields["entry_point"]))

    def wrong_answer_text(self, example: Example) -> str:
        name = example.fields["entry_point"] or "solution"
        return f"def {name}(*args, **kwargs):\n    raise AssertionError('deliberately wrong')\n```"


def program_names(code: str, entry_point: str = "") -> tuple[str, ...]:
    """Names ``code`` reads but neither defines, imports nor finds in builtins, plus ``entry_point`` (which may
    shadow a builtin: MBPP task 126 defines ``sum``), sorted."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return (entry_point,) if entry_point else ()
    defined = set(dir(builtins))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return tuple(sorted((used - defined) | ({entry_point} if entry_point else set())))

"""What every command builds once: task, model, tokenizer, generation backend; and proposals and drawers on top."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fem.configs import ProposalConfig
from fem.drawing import PLAIN, ProposalDrawer, render_prompt
from fem.generation import build_backend
from fem.generation.base import Closeable, GenerationBackend, SupportsPromptReuse
from fem.models import hf_model_dir, load_model_and_tokenizer
from fem.proposals import build_proposal
from fem.proposals.base import Proposal
from fem.readout import number_tokens, option_probabilities, score_completions
from fem.run_configs import Configs
from fem.tasks import build_task
from fem.tasks.answering import training_completion
from fem.tasks.base import Example, Messages, Prediction, Task
from fem.utils.distributed import World
from fem.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class Runtime:
    configs: Configs
    task: Task
    model: Any
    tokenizer: Any
    backend: GenerationBackend
    world: World

    def close(self) -> None:
        """Release what the backend holds (a vLLM engine and its memory); the runtime is unusable afterwards."""
        if isinstance(self.backend, Closeable):
            self.backend.close()

    def plain_messages(self, example: Example) -> Messages:
        """The plain prompt (the task adds the recipe's system prompt)."""
        return self.task.prompt(example)

    def messages(self, example: Example, origin: str) -> Messages:
        return self.task.prompt(example) if origin == PLAIN else self.task.hinted_prompt(example)

    def proposal(self, config: ProposalConfig | None = None) -> Proposal:
        """The proposal ``config`` names (default: the E-step's) on this runtime's backend."""
        return build_proposal(config or self.configs.proposal, self.backend)

    def eval_proposal(self) -> Proposal:
        """The evaluation proposal of the EM loop: ``eval_proposal`` (default ancestral) at ``eval_temperature`` and
        ``eval_max_new_tokens``."""
        return self.proposal(self.configs.eval_variant(self.configs.eval.eval_proposal or "ancestral"))

    def drawer(self, proposal: Proposal, *, sample_answers: bool = False) -> ProposalDrawer:
        """Draw and score with ``proposal``. ``sample_answers`` (the E-step): in forced answer mode the verdict is
        sampled from the model's option probabilities; otherwise (evaluation) it is their argmax, in the
        evaluation's answer mode (``eval_answer_mode``, default ``answer_mode``) with its confidence
        (``eval_confidence``: the read-out, the confidence line the model writes after the verdict, or the expected
        value of that line's number)."""
        mode = self.configs.task.answer_mode
        confidence = "readout"
        if not sample_answers:
            mode = self.configs.eval.eval_answer_mode or mode
            confidence = self.configs.eval.eval_confidence

        def render(example: Example, origin: str) -> list[int]:
            return render_prompt(self.tokenizer, self.messages(example, origin))

        def score(
            examples: Sequence[Example], prompts: Sequence[list[int]], completions: Sequence[str], seed: int
        ) -> list[Prediction]:
            rng = random.Random(seed) if sample_answers else None
            return score_completions(
                self.task,
                self.backend,
                examples,
                completions,
                mode,
                prompt_ids=prompts,
                rng=rng,
                confidence=confidence,
            )

        def read_options(examples: Sequence[Example], prompts: Sequence[list[int]]) -> list[dict[str, float]]:
            return option_probabilities(self.task, self.backend, examples, prompts)

        # the forced read-out extends each prompt: keep the prompts' KV for it (no use, and no memory, otherwise)
        reuse = mode == "forced" and isinstance(self.backend, SupportsPromptReuse)
        return ProposalDrawer(
            task=self.task,
            proposal=proposal,
            render=render,
            score=score,
            train_completion=lambda rationale, example, confidence=None: training_completion(
                self.task, rationale, example, confidence
            ),
            session=self.backend.reuse_prompts if reuse else contextlib.nullcontext,
            read_options=read_options,
        )


def build_runtime(configs: Configs, world: World) -> Runtime:
    """Load the task's data (validated), the model, the tokenizer and the generation backend."""
    task = build_task(configs.task)
    model_cfg = configs.model
    logger.info("loading model %s", model_cfg.model_name_or_path)
    model, tokenizer = load_model_and_tokenizer(
        model_cfg.model_name_or_path,
        gguf_file=configs.em.gguf_file,
        dtype=model_cfg.dtype,
        trust_remote_code=configs.mstep.trust_remote_code,
    )
    model.to(world.device())
    backend = build_backend(
        configs.em.backend,
        model,
        tokenizer,
        configs=configs,
        model_dir=lambda: hf_model_dir(model_cfg.model_name_or_path, configs.em.gguf_file, model, tokenizer),
    )
    runtime = Runtime(configs=configs, task=task, model=model, tokenizer=tokenizer, backend=backend, world=world)
    try:
        check_eval_confidence(runtime)
    except BaseException:
        runtime.close()  # no engine outlives a refused setup
        raise
    return runtime


def check_eval_confidence(runtime: Runtime) -> None:
    """``eval_confidence: stated_mean`` reads the number of ``' N%'`` digit by digit: a tokenizer that does not write
    numbers so is a one-line ``ConfigError`` as soon as it is loaded, before any compute."""
    configs, cue = runtime.configs, runtime.task.confidence_cue
    mode = configs.eval.eval_answer_mode or configs.task.answer_mode
    if configs.eval.eval_confidence == "stated_mean" and mode == "forced" and cue:
        number_tokens(runtime.backend, cue)

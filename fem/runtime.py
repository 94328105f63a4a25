"""What every command builds once: task, model, tokenizer, generation backend; and proposals/drawers on top."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from fem.configs import Configs
from fem.estep.base import PLAIN, ProposalDrawer
from fem.proposals.base import Proposal
from fem.tasks.base import Example, Messages, Task
from fem.utils.distributed import World
from fem.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class Runtime:
    configs: Configs
    task: Task
    model: Any
    tokenizer: Any
    backend: Any
    world: World

    def plain_messages(self, example: Example) -> Messages:
        """The plain prompt (the task adds the recipe's system prompt)."""
        return self.task.prompt(example)

    def messages(self, example: Example, origin: str) -> Messages:
        return self.task.prompt(example) if origin == PLAIN else self.task.hinted_prompt(example)

    def proposal(
        self, name: str | None = None, *, temperature: float | None = None, max_new_tokens: int | None = None
    ) -> Proposal:
        from fem.proposals import build_proposal

        config = self.configs.proposal
        if temperature is not None:
            config = dataclasses.replace(config, temperature=temperature)
        if max_new_tokens is not None:
            config = dataclasses.replace(config, max_new_tokens=max_new_tokens)
        return build_proposal(config, self.backend, name=name or config.proposal)

    def eval_proposal(self, name: str | None = None) -> Proposal:
        """The evaluation proposal: ``eval_proposal`` (default ancestral) at ``eval_temperature`` and
        ``eval_max_new_tokens``."""
        return self.proposal(
            name or self.configs.eval.eval_proposal or "ancestral",
            temperature=self.configs.eval.eval_temperature,
            max_new_tokens=self.configs.eval.eval_max_new_tokens,
        )

    def drawer(self, proposal: Proposal, *, sample_answers: bool = False) -> ProposalDrawer:
        """Draw and score with ``proposal``. ``sample_answers`` (the E-step): in forced answer mode the verdict is
        sampled from the model's option probabilities; otherwise (evaluation) it is their argmax, in the
        evaluation's answer mode (``eval_answer_mode``, default ``answer_mode``)."""
        from fem.tasks.answering import score_completions, training_completion
        from fem.tasks.prompting import render_prompt

        mode = self.configs.task.answer_mode
        if not sample_answers:
            mode = self.configs.eval.eval_answer_mode or mode

        def render(example: Example, origin: str) -> list[int]:
            return render_prompt(self.tokenizer, self.messages(example, origin))

        def score(examples, prompts, completions, seed):
            rng = random.Random(seed) if sample_answers else None
            return score_completions(self.task, self.backend, examples, completions, mode, prompt_ids=prompts, rng=rng)

        return ProposalDrawer(
            task=self.task,
            proposal=proposal,
            render=render,
            score=score,
            train_completion=lambda rationale, example, confidence=None: training_completion(
                self.task, rationale, example, confidence
            ),
            # the forced read-out extends each prompt: keep the prompts' KV for it (no use, and no memory, otherwise)
            session=getattr(self.backend, "reuse_prompts", contextlib.nullcontext)
            if mode == "forced"
            else contextlib.nullcontext,
        )


def build_runtime(configs: Configs, world: World) -> Runtime:
    """Load the task's data (validated), the model, the tokenizer and the generation backend."""
    from fem.generation import build_backend
    from fem.models import load_model_and_tokenizer
    from fem.tasks import build_task

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
    backend = build_backend(configs.em.backend, model, tokenizer, configs)
    return Runtime(configs=configs, task=task, model=model, tokenizer=tokenizer, backend=backend, world=world)

"""The EM loop: for each round, E-step (draw, score, filter, persist) -> M-step (LoRA SFT) -> eval -> state.

``EMRunner`` follows a recipe protocol: ``setup`` / ``run`` / ``run_round`` / ``evaluate`` / ``save_state``.
Every phase's output is on disk before ``state.json`` says it is done, so a killed run resumes where it was:
a finished round is never redone, a half-finished E-step keeps its finished chunks, an interrupted M-step or
eval restarts. Each ``metrics.jsonl`` line and the M-step's training logs also go to the trackers ``report_to``
names (``fem.tracking``: main process only, each point once across resumptions).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm
from trl import get_peft_config

from fem.drawing import Sample
from fem.errors import DataError
from fem.estep.confidence import apply_confidence_targets
from fem.estep.runner import SAMPLES, check_samples, kept_samples, run_estep
from fem.estep.schemes import build_scheme
from fem.eval.evaluate import EvalProgress, eval_examples, evaluate
from fem.mstep.sft import check_eos, train_adapter
from fem.preflight import train_config
from fem.report import build_report
from fem.run_configs import Configs
from fem.runtime import Runtime, build_runtime
from fem.state import RunState
from fem.tracking import RunTracker, report_to_names, trainer_report_to
from fem.utils.distributed import World, current_world
from fem.utils.faults import crash_point
from fem.utils.io import DamagedFileError, atomic_write_json, atomic_write_text, read_json, write_jsonl
from fem.utils.logging import get_logger
from fem.utils.run_info import run_record
from fem.utils.seeding import derive_seed, seed_everything

logger = get_logger(__name__)


def round_dir(output_dir: Path, round_index: int) -> Path:
    return output_dir / f"round_{round_index:03d}"


class EMRunner:
    """Runs ``rounds`` EM rounds into ``output_dir``; safe to call again on the same dir to resume."""

    def __init__(self, configs: Configs):
        self.configs = configs
        self.output_dir = Path(configs.mstep.output_dir)
        self.seed = int(configs.mstep.seed)
        self.world: World = current_world()
        self.runtime: Runtime | None = None
        self.state: RunState | None = None
        self.tracker: RunTracker | None = None

    # -- setup -------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Validate the output dir and load or create the run state (main process, holding the run lock; a run of
        another config is refused, or with overwrite replaced), record the config, then build the runtime and load
        the last finished round's adapter (resolved inside the output dir, wherever the dir was moved or copied)."""
        seed_everything(self.seed)
        config = train_config(self.configs)
        record = run_record(config, "fem train") if self.world.is_main else {}
        if self.world.is_main:
            self.state = RunState.load_or_create(
                self.output_dir, config, overwrite=self.configs.em.overwrite_output_dir_contents
            )
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "config.yaml", yaml.safe_dump(record, sort_keys=False))
            self.state.save(self.output_dir)
        self.world.barrier()
        if not self.world.is_main:  # the state the main process just wrote (only it validates and cleans the dir)
            self.state = RunState.load(self.output_dir)
        self.runtime = build_runtime(self.configs, self.world)
        self.train_examples = self.runtime.task.load("train")
        if self.configs.estep.estep_position_swap:  # each pair also drawn with its candidates swapped
            self.train_examples = self.runtime.task.with_swaps(self.train_examples)
        self.eval_examples = eval_examples(
            self.runtime.task, self.runtime.task.load("eval"), self.configs.eval.eval_position_swap
        )
        check_eos(self.runtime.tokenizer, self.runtime.backend.eos_token_ids)
        adapter = self.state.adapter_path(self.output_dir)
        if adapter is not None:
            self.runtime.backend.load_adapter(str(adapter))
        names = report_to_names(self.configs.mstep.report_to) if self.world.is_main else []  # main process only
        run_name = self.configs.mstep.run_name or self.output_dir.resolve().name
        self.tracker = RunTracker(self.output_dir, names, run_name=run_name, config=record.get("config", {}))
        self.tracker.start(self.state.config_hash)
        if self.world.is_main:
            finished = self._finished_metrics()
            self.tracker.catch_up(finished[r] for r in sorted(finished))

    # -- run ---------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            assert self.state is not None
            if self.configs.eval.eval_before_training and not self.state.baseline_done:
                metrics = self.evaluate(self.output_dir / "baseline")
                self._append_metrics({"round": -1, **metrics})
                self.state.baseline_done = True
                self.save_state()
            for k in range(self.configs.em.rounds):
                if self.state.done(k, "eval"):
                    continue
                self.run_round(k)
            self.state.finished = True
            self.save_state()
            self.write_report()
        finally:
            if self.tracker is not None:
                self.tracker.finish()
        return self.state.__dict__

    def write_report(self) -> None:
        """report.md and plots/ (a failure to plot never fails a finished run; `fem report` can retry)."""
        if not self.world.is_main:
            return
        try:
            path = build_report(self.output_dir)
            logger.info("report: %s", path)
        except Exception as e:  # noqa: BLE001 - reporting is best effort after the results are on disk
            logger.warning("could not build the report (%s); run `fem report %s` to retry", e, self.output_dir)

    def run_round(self, k: int) -> None:
        assert self.state is not None and self.runtime is not None
        rdir = round_dir(self.output_dir, k)
        metrics_path = rdir / "metrics.json"
        metrics: dict[str, Any] = {"round": k}
        if metrics_path.exists():
            metrics.update(read_json(metrics_path))
        if not self.state.done(k, "estep"):
            logger.info(
                "round %d: E-step (%s, %s) on %d examples",
                k,
                self.configs.estep.scheme,
                self.configs.proposal.proposal,
                len(self.train_examples),
            )
            metrics.update(self.estep(k, rdir))
            self._write_round_metrics(rdir, metrics)
            crash_point("loop.estep_done")
            self.state.mark(k, "estep")
            self.save_state()
        if not self.state.done(k, "mstep"):
            if self._samples_damaged(k, rdir):
                metrics.update(self.estep(k, rdir))  # draws only the damaged chunks again (same seeds)
                self._write_round_metrics(rdir, metrics)
                self._samples_damaged(k, rdir, again=True)
            metrics.update(self.mstep(k, rdir))
            self._write_round_metrics(rdir, metrics)
            crash_point("loop.mstep_done")
            self.state.mark(k, "mstep")
            if (rdir / "adapter").exists():
                self.state.last_adapter = (rdir / "adapter").relative_to(self.output_dir).as_posix()
            self.save_state()
            crash_point("loop.mstep_saved")
        if self.configs.eval.eval_every_round or k == self.configs.em.rounds - 1:
            logger.info("round %d: eval on %d examples", k, len(self.eval_examples))
            metrics.update(self.evaluate(rdir / "eval"))
        self._write_round_metrics(rdir, metrics)
        crash_point("loop.eval_done")
        self._append_metrics(metrics)
        self.state.mark(k, "eval")
        self.save_state()
        summary = {
            key: metrics.get(key)
            for key in ("estep/acceptance_rate", "estep/kept_samples", "mstep/loss", "eval/accuracy")
        }
        logger.info("round %d done: %s", k, summary)

    # -- phases ------------------------------------------------------------------------------------------------
    def estep(self, k: int, rdir: Path) -> dict[str, Any]:
        assert self.runtime is not None
        proposal = self.runtime.proposal()
        drawer = self.runtime.drawer(proposal, sample_answers=True)
        task, estep = self.runtime.task, self.configs.estep

        def targets(draws: list[list[Sample]], seed: int) -> None:
            apply_confidence_targets(
                draws,
                drawer,
                target=estep.confidence_target,
                samples=estep.confidence_samples,
                prior=estep.confidence_prior,
                options=task.options,
                seed=seed,
                swap=task.swapped if task.pairwise else None,
            )

        start = time.perf_counter()
        bar = tqdm(total=len(self.train_examples), desc=f"E-step round {k}", disable=not self.world.is_main)
        metrics = run_estep(
            round_index=k,
            examples=self.train_examples,
            scheme=build_scheme(self.configs.estep),
            drawer=drawer,
            proposal_name=proposal.name,
            round_dir=rdir,
            chunk_size=self.configs.proposal.generation_batch_size,
            seed=self.seed,
            world=self.world,
            save_rejected=self.configs.estep.save_rejected,
            progress_bar=bar,
            targets=targets if task.confidence_cue else None,
            balance_seed=derive_seed(self.seed, "balance", k) if estep.estep_balance else None,
        )
        bar.close()
        metrics["estep/wall_s"] = time.perf_counter() - start
        return metrics

    def _samples_damaged(self, k: int, rdir: Path, again: bool = False) -> bool:
        """Before the M-step: do the samples on disk equal what the E-step recorded? If not (a line damaged after it
        was written), say so and return True: the E-step then draws those chunks again. ``again``: a second
        mismatch after that redraw is an error."""
        chunks = -(-len(self.train_examples) // self.configs.proposal.generation_batch_size)
        problems = check_samples(rdir, chunks)
        if problems and again:
            raise DamagedFileError(
                f"round {k}: {problems[0]} even after drawing it again",
                file=str(rdir / SAMPLES),
                fix="check the disk, then remove the round dir's samples and progress files to draw them anew",
            )
        for problem in problems:
            logger.warning("round %d: %s; drawing that chunk again before the M-step", k, problem)
        return bool(problems)

    def training_rows(self, samples: list[dict[str, Any]], samples_file: Path) -> list[dict[str, Any]]:
        """The M-step's rows: each kept sample's completion under the *plain* prompt of its example (a hinted
        draw teaches what to write without the hint), with its weight."""
        assert self.runtime is not None
        by_id = {e.id: e for e in self.train_examples}
        unknown = sorted({s["example_id"] for s in samples} - by_id.keys())
        if unknown:
            raise DataError(
                f"holds samples of {len(unknown)} example ids the training data lacks (e.g. {unknown[0]!r:.60})",
                file=str(samples_file),
                field="train_file",
                fix="restore the training data the run started with, or start over in a new output_dir",
            )
        return [
            {
                "prompt": self.runtime.plain_messages(by_id[s["example_id"]]),
                "completion": s["completion"],
                "weight": s["weight"],
            }
            for s in samples
        ]

    def mstep(self, k: int, rdir: Path) -> dict[str, Any]:
        """Train this round's adapter on the kept samples (from the base model by default), save, verify, load it."""
        assert self.runtime is not None and self.state is not None
        rows = self.training_rows(kept_samples(rdir), rdir / SAMPLES)
        previous = self.state.adapter_path(self.output_dir)
        if not rows:
            logger.warning("round %d: no kept samples; the M-step is skipped and the previous adapter kept", k)
            if previous is not None:
                self._copy_adapter(previous, rdir / "adapter")
            return {"mstep/samples": 0, "mstep/skipped": True}
        logger.info("round %d: M-step on %d kept samples", k, len(rows))
        self.runtime.backend.unload_adapter()
        init = None if self.configs.em.restart_from_base or previous is None else str(previous)
        metrics = train_adapter(
            base_model=self.runtime.model,
            tokenizer=self.runtime.tokenizer,
            rows=rows,
            args=self.configs.mstep,
            peft_config=get_peft_config(self.configs.model),
            adapter_dir=rdir / "adapter",
            init_adapter=init,
            weighted=self.configs.estep.reward_weighting,
            seed=derive_seed(self.seed, "mstep", k) % (2**31),
            callbacks=[self.tracker.mstep_callback(k)] if self.tracker is not None else [],
            report_to=trainer_report_to(self.configs.mstep.report_to),
        )
        self.world.barrier()
        self.runtime.backend.load_adapter(str(rdir / "adapter"))
        return metrics

    def _copy_adapter(self, source: Path, target: Path) -> None:
        if self.world.is_main:
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target)
        self.world.barrier()

    def evaluate(self, out_dir: Path) -> dict[str, Any]:
        assert self.runtime is not None
        proposal = self.runtime.eval_proposal()
        with EvalProgress(
            len(self.eval_examples),
            f"eval {out_dir.parent.name if out_dir.name == 'eval' else out_dir.name}",
            self.world.is_main,
        ) as progress:
            return evaluate(
                task=self.runtime.task,
                examples=self.eval_examples,
                drawer=self.runtime.drawer(proposal),
                proposal_name=proposal.name,
                num_samples=self.configs.eval.num_samples,
                seed=self.seed,
                chunk_size=self.configs.proposal.generation_batch_size,
                world=self.world,
                out_dir=out_dir,
                progress=progress,
            )

    # -- state -------------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        assert self.state is not None
        if self.world.is_main:
            self.state.save(self.output_dir)
        self.world.barrier()

    def _write_round_metrics(self, rdir: Path, metrics: dict[str, Any]) -> None:
        if self.world.is_main:
            atomic_write_json(rdir / "metrics.json", metrics)

    def _append_metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.jsonl``: one line per finished round (``round -1``: the baseline), rebuilt from the per-round
        ``metrics.json`` files, never read back, so that no damaged line can cost another round's line; then the
        round's line to the trackers (each round once: the tracker's ledger skips a round it already sent).
        ``metrics`` is the line of the round that just finished (its phase is marked after this)."""
        if not self.world.is_main:
            return
        lines = self._finished_metrics()
        lines[metrics["round"]] = metrics
        lines = {r: {k: v for k, v in m.items() if k != "mstep/loss_curve"} for r, m in lines.items()}
        write_jsonl(self.output_dir / "metrics.jsonl", [lines[r] for r in sorted(lines)])
        if self.tracker is not None:
            self.tracker.log_round(lines[metrics["round"]])

    def _finished_metrics(self) -> dict[int, dict[str, Any]]:
        """The metrics of every finished round by index (``-1``: the baseline), from their ``metrics.json`` files."""
        assert self.state is not None
        lines = {}
        if self.state.baseline_done and (self.output_dir / "baseline" / "metrics.json").is_file():
            lines[-1] = {"round": -1, **read_json(self.output_dir / "baseline" / "metrics.json")}
        for key, phases in self.state.completed.items():
            path = round_dir(self.output_dir, int(key)) / "metrics.json"
            if "eval" in phases and path.is_file():
                lines[int(key)] = read_json(path)
        return lines

"""fem: filtered-EM reasoning. Sample rationales, keep the ones that reach the right answer, fine-tune LoRA, repeat.

Layers, top first. A module imports only its own package and layers below it; modules that share a layer never
import each other (tests/test_layers.py checks both, and that nothing imports in a cycle):

    __main__
    cli                          dispatch only; the one module that imports lazily (fast ``fem --help``)
    commands/                    train, eval, sample, report, tasks, bench, export: thin, one ``main(argv)`` each
    loop                         EMRunner: E-step -> M-step -> eval per round, resumable
    runtime, preflight, export/  build task/model/backend/proposals/drawers; validate before compute -> plan; a
                                   run's round as a shippable folder (adapter or merged model, model card)
    models, estep/, eval/,       model loading; the loop's phases (schemes and their runner, evaluation, LoRA
      mstep/, report/, tracking    M-step through TRL, report.md and plots, the run in the user's trackers)
    drawing, readout, testing    prompt -> traces -> scored samples; the forced answer read-out; test LMs
    proposals/                   ancestral, power_mh, power_smc, best_of_n (drive a backend; never know the task)
    generation/, tasks/          backends (protocols, hf); tasks (data, prompts, answers, rewards, metrics)
    recipe, state                recipe parsing into Configs; run state and resume
    run_configs, metrics,        one command's Configs and their cross-checks; accuracy/ECE/pass@k...; NLL,
      calibration, sandbox,        equal-mass ECE, temperature fit, bootstrap intervals; untrusted code; what fem
      rundir                       owns in an output dir and the checks on the dir itself
    configs, trl_configs         the config dataclasses (fem's own; the TRL-based M-step and model configs)
    validation, registry         config checks from field metadata; name-or-dotted-path plug-in resolution
    utils/                       io (atomic writes, JSONL, the run lock), logging, seeds, the process group (World)
    errors                       user-facing errors (one line: file, field, fix)

TRL is imported by the loop, the M-step, and the configs that are TRL's (``trl_configs``, and ``recipe``'s parser).
"""

__version__ = "0.1.0"

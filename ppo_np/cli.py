"""The ``ppo-np`` command line.

    ppo-np train ENV_ID [--env-kwargs key=value ...] [--wrapper module:Name ...] [--preset NAME]
                        [--total-steps N] [--run-dir DIR] [--resume DIR] [--json]
                        [--set key=value ...] [--<any config field> VALUE ...]
    ppo-np eval PATH [--episodes N] [--seed S] [--stochastic] [--max-episode-steps N] [--video DIR] [--json]
    ppo-np plot RUN_DIR [--out PNG]
    ppo-np gradcheck [RUN_DIR] [--json] [--seed S] [--trials K] [--samples N]
    ppo-np study RUN_DIR [--max-samples N] [--estimates K] [--value-steps N] [--value-states N]
                         [--value-rollouts N] [--landscape-episodes N] [--seed S] [--out DIR] [--json]

ENV_ID is a registered gymnasium id, or ``module:EnvId`` to import ``module`` first (it registers the
id), as ``gymnasium.make`` does. ``--env-kwargs`` values are read as JSON where they parse (numbers,
true/false, null, lists, quoted strings), else as plain strings. The environment's recipe (id, kwargs,
wrapper names) is saved with the run, so ``--resume`` and ``eval`` rebuild it.

Every field of ``PPOConfig`` is an option of ``train`` (``--gae-lambda 0.9``), with the field's
documentation as its help; ``--set gae_lambda=0.9`` does the same. Later settings win: preset, then
``--set``, then the field options.

Exit status, and what is printed (never a traceback):
    0    success;
    1    a gradient check failed, or a run stopped on a fault (an environment's error, even a
         ValueError raised inside it; a NaN): the error's type, message and origin, the checkpoint
         left in the run directory (step and update, read back from disk) and the resume command;
    2    bad input, found before the first environment step: one line naming the value and what is
         allowed (config values, --set keys, env ids, unsupported spaces, run directories, checkpoints);
    130  Ctrl-C: during training the first one stops after the update under way and the second at
         once; either way a checkpoint is saved first, and the message says how to resume;
    143  SIGTERM (a job scheduler's stop), during training: the same as Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

from ppo_np import checkpoint, rundir
from ppo_np.config import (DEFAULT_TOTAL_STEPS, PRESET_SOURCES, PRESETS, RESUMABLE_FIELDS, PPOConfig, field_doc,
                           field_names, parse_value)
from ppo_np.rundir import CHECKPOINT_NAME, GRADIENTS_NAME


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``, else an error saying ``what`` was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


# --- train ---------------------------------------------------------------------------------------------
#
# Two phases, two kinds of failure. Setting up (parsing, the config, the environment, the run directory,
# the checkpoint to resume) fails on bad input: a ValueError, exit status 2, one line. Once the first
# environment step is taken, anything that stops the run (an environment's error, a NaN, a full disk) is
# a fault, not bad input, even when it is a ValueError raised inside the environment: exit status 1,
# the error's type, message and origin, the checkpoint on disk and the command that resumes it.


def _env_value(text: str):
    """An ``--env-kwargs`` value: JSON where it parses (5, 9.81, true, null, [1, 2], "x"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        lowered = text.strip().lower()
        return {"none": None, "true": True, "false": False}.get(lowered, text)


def _env_source(args: argparse.Namespace):
    """The environment the arguments name (``envs.EnvSource``), built once; a ValueError on bad input."""
    from ppo_np.envs import EnvSource, import_name

    kwargs = {key: _env_value(text) for key, text in args.env_kwargs} or None
    return EnvSource.of(args.env_id, kwargs, [import_name(name) for name in args.wrapper])


def _preset_name(args: argparse.Namespace, source) -> str:
    """Which preset the run starts from, in words."""
    from ppo_np.heads import head_for

    if args.preset:
        return f"preset {args.preset} (after {PRESET_SOURCES[args.preset]})"
    if args.env_id in PRESETS:
        return f"preset {args.env_id} (after {PRESET_SOURCES[args.env_id]})"
    kind = "continuous" if head_for(source.action_space).continuous else "discrete"
    return f"generic {kind} defaults (no preset for {args.env_id})"


def _train_config(args: argparse.Namespace, source) -> PPOConfig:
    base = PPOConfig(**PRESETS[args.preset]) if args.preset else PPOConfig.for_env(source)
    return base.replace(**_config_changes(args))


def _config_options(args: argparse.Namespace, allowed=()) -> list[str]:
    """The config-changing options given on the command line, as the user wrote them, but for the fields
    in ``allowed``."""
    given = [f"--preset {args.preset}"] if args.preset else []
    given += [f"--env-kwargs {key}=..." for key, _ in args.env_kwargs] + [f"--wrapper {w}" for w in args.wrapper]
    given += [f"--set {key}=..." for key, _ in args.set if key not in allowed]
    given += [f"--{name.replace('_', '-')}" for name in field_names()
              if getattr(args, f"cfg_{name}") is not None and name not in allowed]
    return given


def _config_changes(args: argparse.Namespace) -> dict:
    """The config fields the command line sets (``--set`` first, then the field options), parsed."""
    changes = {key: parse_value(key, text) for key, text in args.set}
    changes.update({name: parse_value(name, getattr(args, f"cfg_{name}"))
                    for name in field_names() if getattr(args, f"cfg_{name}") is not None})
    return changes


def _train_setup(args: argparse.Namespace):
    """The agent, its run directory and the step budget; a ValueError (exit status 2) on bad input."""
    from ppo_np.ppo import PPO

    if args.resume:
        run_dir = _train_setup_refusals(args)
        if args.fork:
            run_dir = _fork(run_dir, Path(args.fork))
        agent = PPO.load(run_dir / CHECKPOINT_NAME, run_dir=run_dir)
        _hold(agent)
        try:
            rundir.remove_stale_temps(run_dir)  # ours to delete once the directory is ours
            if args.env_id and args.env_id != agent.env_id:
                raise ValueError(f"--resume {run_dir} holds a run on {agent.env_id}, not {args.env_id}")
            if args.total_steps is not None and args.total_steps < agent.global_step:
                raise ValueError(f"--total-steps {args.total_steps} is below the {agent.global_step} steps "
                                 f"the run in {run_dir} has already taken")
            total = args.total_steps or agent.total_steps
            if total < 1:
                raise ValueError(f"the checkpoint in {run_dir} has no step budget; give one with --total-steps")
            agent.change_config(**_config_changes(args))
            _say_how_schedules_go(agent, total, args)
        except ValueError:
            agent.close()  # the environments, and the run directory's lock
            raise
        args.preset_used = "the resumed run's configuration"
        return agent, run_dir, total

    if not args.env_id:
        raise ValueError("train needs an ENV_ID (or --resume RUN_DIR)")
    for option, given in (("--fork", args.fork), ("--reschedule", args.reschedule)):
        if given:
            raise ValueError(f"{option} continues a saved run: it goes with --resume RUN_DIR")
    source = _env_source(args)
    config = _train_config(args, source)
    if config.vectorization == "native" and not source.has_native_vector_env:
        raise ValueError(f"{source.name} has no native vectorised implementation (or it has kwargs or wrappers, "
                         "which the native one does not take); use --vectorization sync or async")
    default_name = f"{args.env_id.replace(':', '_').replace('/', '_')}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / default_name
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ValueError(f"run directory {run_dir} already holds a run; use --resume {run_dir} "
                         "or choose another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ValueError(f"run directory {run_dir} is not writable")
    agent = PPO(source, config, run_dir=run_dir)
    _hold(agent)
    rundir.remove_stale_temps(run_dir)  # ours to delete once the directory is ours
    args.preset_used = _preset_name(args, source)
    return agent, run_dir, _total_steps(args)


def _total_steps(args: argparse.Namespace) -> int:
    return args.total_steps or DEFAULT_TOTAL_STEPS.get(args.env_id, 1_000_000)


def _effective_config(args: argparse.Namespace) -> dict:
    """What ``train`` would run, as config.json would hold it, without touching any file (--print-config)."""
    if args.resume:
        _train_setup_refusals(args)
        arrays = checkpoint.load(Path(args.resume) / CHECKPOINT_NAME)
        config = PPOConfig.from_json(str(arrays["config"]))
        recipe = str(arrays["env/recipe"]) if "env/recipe" in arrays else ""
        changes = _config_changes(args)
        old = json.loads(str(arrays["config_changes"])) if "config_changes" in arrays else []
        return {"env_id": str(arrays["env_id"]), "env_recipe": json.loads(recipe) if recipe else None,
                "preset": "the resumed run's configuration",
                "total_steps": args.total_steps or int(arrays["counters/total_steps"]),
                **dataclasses.asdict(config.replace(**changes)),
                "config_changes": old + [{"update": int(arrays["counters/update"]), "field": k,
                                          "old": getattr(config, k), "new": v}
                                         for k, v in changes.items() if getattr(config, k) != v]}
    if not args.env_id:
        raise ValueError("train needs an ENV_ID (or --resume RUN_DIR)")
    source = _env_source(args)
    config = _train_config(args, source)
    return {"env_id": source.name, "env_recipe": source.recipe, "preset": _preset_name(args, source),
            "total_steps": _total_steps(args), **dataclasses.asdict(config), "config_changes": []}


def _say_how_schedules_go(agent, total: int, args: argparse.Namespace) -> None:
    """Extending a run past its schedules' horizon: say what they do there (stderr), unless --json."""
    cfg = agent.config
    scheduled = [name for name, on in (("learning rate", cfg.lr_schedule != "constant"),
                                       ("clip range", cfg.clip_schedule != "constant"),
                                       ("temperature", cfg.temperature_final is not None),
                                       ("entropy coefficient", cfg.ent_schedule in ("linear", "exponential")))
                 if on]
    if args.json or not scheduled or total <= agent.schedule_horizon:
        return
    if args.reschedule:
        print(f"ppo-np train: --reschedule: the {', '.join(scheduled)} now run over {total} steps, "
              f"from their values at step {agent.global_step}", file=sys.stderr)
    else:
        print(f"ppo-np train: the {', '.join(scheduled)} ran over the first {agent.schedule_horizon} steps; from "
              f"there to {total} they hold their final values (a learning rate annealed to 0 learns nothing); "
              "--reschedule stretches them over the new total", file=sys.stderr)


def _fork(source: Path, target: Path) -> Path:
    """``target`` made a copy of the run in ``source`` (its checkpoint, config and CSVs), to continue there;
    ``source`` is only read."""
    import shutil

    if target.resolve() == source.resolve():
        raise ValueError(f"--fork {target} is the run being resumed; give a new directory")
    if (target / CHECKPOINT_NAME).exists():
        raise ValueError(f"--fork {target} already holds a run; give a new directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT_NAME, "config.json", "metrics.csv", GRADIENTS_NAME):
            if (source / name).is_file():
                shutil.copyfile(source / name, target / name)
    except OSError as exc:
        raise ValueError(f"cannot fork into {target}: {exc.strerror or exc}") from None
    return target


def _train_setup_refusals(args: argparse.Namespace) -> Path:
    """The run directory of ``--resume``, or a ValueError: options it cannot take, no directory, no checkpoint."""
    run_dir = Path(args.resume)
    ignored = _config_options(args, RESUMABLE_FIELDS) + ([f"--run-dir {args.run_dir}"] if args.run_dir else [])
    if ignored:
        raise ValueError(f"--resume continues the run with the configuration saved in {run_dir}; "
                         f"{', '.join(ignored)} cannot be combined with it (a resumed run may change "
                         f"{', '.join(RESUMABLE_FIELDS)})")
    if not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir}: no such run directory")
    if not (run_dir / CHECKPOINT_NAME).exists():
        raise ValueError(f"{run_dir} holds no checkpoint: the run stopped before its first one, so there is "
                         f"nothing to resume; start it again with {_restart_command(run_dir, args.env_id)}")
    return run_dir


def _hold(agent) -> None:
    """The run directory's lock for this process until it exits; a ValueError (exit status 2) naming the
    process that holds it."""
    try:
        agent.hold_run_dir()
    except ValueError:
        agent.close()
        raise


def _restart_command(run_dir: Path, env_id: str | None) -> str:
    recipe = {"id": env_id or "ENV_ID"}
    if env_id is None:  # the run's config.json names its environment, if it got that far
        try:
            saved = json.loads((run_dir / "config.json").read_text())
            recipe = saved.get("env_recipe") or {"id": saved["env_id"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    words = [str(recipe.get("id"))]
    if recipe.get("kwargs"):
        words += ["--env-kwargs", *(f"{k}={json.dumps(v)}" for k, v in recipe["kwargs"].items())]
    for wrapper in recipe.get("wrappers") or []:
        words += ["--wrapper", str(wrapper)]
    return f"ppo-np train {shlex.join(words)} --run-dir {shlex.quote(str(run_dir))} ..."


def _checkpoint_report(run_dir: Path, label: str = "checkpoint") -> str:
    """What the run directory holds now, read back from disk, and how to continue from it."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return f"no checkpoint was saved in {run_dir} before the run stopped: nothing to resume; start it again"
    try:
        arrays = checkpoint.load(path)
    except checkpoint.CheckpointError as exc:
        return f"the checkpoint does not load: {exc}"
    where = ", ".join(f"{name} {int(arrays[key])}" for name, key in
                      (("step", "counters/global_step"), ("update", "counters/update")) if key in arrays)
    return f"{label}: {path} ({where})\nResume with:\n  ppo-np train --resume {shlex.quote(str(run_dir))}"


def _describe(exc: BaseException) -> str:
    """``Type: message``, where it was raised, and the error it interrupted, if any: no traceback."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" (raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    context = exc.__context__
    if context is not None and not exc.__suppress_context__:
        text += f", while handling {type(context).__name__}" + (f": {context}" if str(context) else "")
    return text


class _StopSignals:
    """Ctrl-C (SIGINT) or SIGTERM (a job scheduler's stop) during training: the first stops the run
    after the update under way (learn's callback returns False, learn saves, the checkpoint falls on
    an update boundary); a second one, of either kind, stops it at once (KeyboardInterrupt: learn
    saves what it has). A KeyboardInterrupt raised while compiled Numba code runs can surface as
    another exception (SystemError); ``requested`` tells them apart. ``status`` is the exit status
    the shell convention gives the first signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
    """

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested = False
        self.status = 128 + signal.SIGINT
        self.previous = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: Python delivers no signals here anyway
                pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.status = 128 + signum
        print(f"\nppo-np train: {self.SIGNALS[signum]}: stopping after this update (Ctrl-C or SIGTERM again "
              "to stop at once)", file=sys.stderr)

    def callback(self, agent, row) -> bool:
        return not self.requested


def _interrupted(agent, run_dir: Path, phase: str, status: int = 130) -> int:
    print(f"\nppo-np train: interrupted at step {agent.global_step} ({phase}).\n{_checkpoint_report(run_dir)}",
          file=sys.stderr)
    return status


def _cmd_train(args: argparse.Namespace) -> int:
    from ppo_np.evaluation import eval_seed, evaluate
    from ppo_np.ppo import NonFiniteError

    if args.print_config:
        print(json.dumps(_effective_config(args), indent=2))
        return 0
    agent, run_dir, total = _train_setup(args)  # bad input raises ValueError here: exit status 2
    if not args.json:
        print(f"ppo-np train: {agent.env_id} with the {args.preset_used}, {total} steps, run directory {run_dir}",
              file=sys.stderr)
    start = time.perf_counter()
    step0 = agent.global_step
    phase = "training"
    stop = _StopSignals()
    try:
        with stop:
            agent.learn(total, callback=stop.callback, progress_bar=not args.json and not args.no_progress,
                        reschedule=args.reschedule)
        if stop.requested and agent.global_step < total:  # a stop in the last update still finished the run
            raise KeyboardInterrupt
        wall = time.perf_counter() - start
        phase = "evaluation"  # outside the handler: Ctrl-C here is a plain KeyboardInterrupt, exit 130
        result = evaluate(agent, episodes=args.eval_episodes, seed=eval_seed(agent))
    except NonFiniteError as exc:
        print(f"ppo-np train: training stopped: {exc}.\n{_checkpoint_report(run_dir, 'last good checkpoint')}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # an environment's error, a full disk, ...: a fault of the run, not bad input
        if stop.requested:  # or the second stop signal, come out of compiled code as another exception
            return _interrupted(agent, run_dir, phase, stop.status)
        print(f"ppo-np train: {phase} stopped by {_describe(exc)}\n{_checkpoint_report(run_dir)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted(agent, run_dir, phase, stop.status)
    finally:
        with contextlib.suppress(Exception):
            agent.close()
    summary = {"env_id": agent.env_id, "preset": args.preset_used, "eval_seed": eval_seed(agent),
               "total_steps": agent.global_step, "wall_s": round(wall, 3),
               "steps_per_s": round((agent.global_step - step0) / wall, 1),
               "mean_return_last20": agent.mean_recent_return(20),
               "eval_mean_return": result["mean_return"], "eval_std_return": result["std_return"],
               "run_dir": str(run_dir)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{agent.env_id}: {agent.global_step} steps in {wall:.1f} s ({summary['steps_per_s']:.0f} steps/s); "
              f"training return (last 20) {summary['mean_return_last20']:.1f}; "
              f"evaluation return {result['mean_return']:.1f} +- {result['std_return']:.1f} "
              f"over {result['episodes']} episodes (seed {eval_seed(agent)})\nrun directory: {run_dir}")
    return 0


def _checkpoint_path(path: str) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def _cmd_eval(args: argparse.Namespace) -> int:
    from ppo_np.evaluation import check_video_output, eval_seed, evaluate
    from ppo_np.ppo import PPO

    agent = PPO.load(_checkpoint_path(args.path))  # a bad file raises CheckpointError: exit status 2
    seed = eval_seed(agent) if args.seed is None else args.seed
    if args.video:
        check_video_output(args.video)  # before the first episode: exit status 2
    try:
        result = evaluate(agent, episodes=args.episodes, seed=seed, deterministic=not args.stochastic,
                          max_episode_steps=args.max_episode_steps, video_dir=args.video)
    except Exception as exc:  # the environment's fault, not the input's
        print(f"ppo-np eval: evaluation stopped by {_describe(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**result, "seed": seed}))
    else:
        capped = (f"; {result['capped_episodes']} cut at the step cap of {result['max_episode_steps']}"
                  if result["capped_episodes"] else "")
        print(f"{agent.env_id}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
              f"over {result['episodes']} episodes ({'stochastic' if args.stochastic else 'deterministic'} "
              f"actions, seed {seed}){capped}")
        for video in result.get("videos", []):
            print(f"  {video['path']}: return {video['return']:.2f}, {video['length']} steps")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ppo_np import sweep

    spec = sweep.SweepSpec(env=args.env_id, seeds=sweep.parse_seeds(args.seeds), grid=sweep.grid_from_args(args.grid),
                           fixed=_config_changes(args), total_steps=args.total_steps,
                           env_kwargs={key: _env_value(text) for key, text in args.env_kwargs},
                           wrappers=tuple(args.wrapper), eval_episodes=args.eval_episodes)
    out = Path(args.out) if args.out else Path("sweeps") / (
        f"{args.env_id.replace(':', '_').replace('/', '_')}_{time.strftime('%Y%m%d-%H%M%S')}")
    sweep.check_output(spec, out)  # bad input refused before anything is said or started
    if not args.json:
        print(f"ppo-np sweep: {args.env_id} into {out}" + (f" on the Ray cluster at {args.address}" if args.address
                                                           else ", on a Ray instance of this machine"), file=sys.stderr)
    try:
        summary = sweep.run_sweep(spec, out, address=args.address, workers=args.workers, retries=args.retries,
                                  progress=not (args.json or args.no_progress))
    except sweep.SweepInterrupted as exc:
        print(f"\nppo-np sweep: {exc}; run the same command again to resume", file=sys.stderr)
        return 130
    unfinished = sum(len(c["unfinished"]) for c in summary["configurations"])
    if args.json:
        print(json.dumps(summary))
    else:
        print(_sweep_table(summary))
        for config in summary["configurations"]:
            for trial in config["unfinished"]:
                print(f"  failed: {trial['run_dir']}: {trial.get('error', 'not finished')}")
        print(f"summary: {out / sweep.SUMMARY_NAME}" + (f"; curves: {summary['curves']}" if "curves" in summary else ""))
    return 1 if unfinished else 0


def _sweep_table(summary: dict) -> str:
    def estimate(config, name):
        e = config.get(name)
        if e is None:
            return "-"
        return f"{e['value']:.1f}" + (f" [{e['ci_low']:.1f}, {e['ci_high']:.1f}]" if e["ci_low"] is not None else "")

    lines = [f"{summary['env']}, {summary['total_steps']} steps per trial: final return "
             f"(95% bootstrap intervals over seeds)",
             f"{'configuration':<40} {'seeds':>5}  {'IQM':<24} {'median':<24} {'mean':<24}"]
    for c in summary["configurations"]:
        lines.append(f"{c['label']:<40} {len(c['final_returns']):>5}  {estimate(c, 'iqm'):<24} "
                     f"{estimate(c, 'median'):<24} {estimate(c, 'mean'):<24}")
    return "\n".join(lines)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ppo_np import sweep

    result = sweep.compare(args.sweep_a, args.sweep_b)
    if args.json:
        print(json.dumps(result))
        return 0
    (steps_a, steps_b), (episodes_a, episodes_b) = result["total_steps"], result["eval_episodes"]
    print(f"{result['env']}: P(a run of A beats a run of B), 95% bootstrap interval\n"
          f"A = {result['a']} ({steps_a} steps, {episodes_a} evaluation episodes per trial)\n"
          f"B = {result['b']} ({steps_b} steps, {episodes_b} evaluation episodes per trial)")
    if steps_a != steps_b or episodes_a != episodes_b:
        print("  (the sweeps trained or evaluated for different lengths: the comparison includes that)")
    for pair in result["pairs"]:
        p = pair["probability_of_improvement"]
        interval = f" [{p['ci_low']:.2f}, {p['ci_high']:.2f}]" if p["ci_low"] is not None else " (one seed: no interval)"
        print(f"  {pair['a']} ({pair['seeds_a']} seeds) vs {pair['b']} ({pair['seeds_b']} seeds): "
              f"{p['value']:.2f}{interval}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ppo_np.plot import plot_gradients, plot_run

    run_dir = Path(args.run_dir)
    print(f"wrote {plot_run(run_dir, Path(args.out) if args.out else None)}")
    if (run_dir / GRADIENTS_NAME).is_file():
        print(f"wrote {plot_gradients(run_dir)}")
    return 0


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from ppo_np.gradcheck import DEFAULT_TOL
    from ppo_np.gradcheck_suite import check_agent, run_suite

    if args.run_dir:
        from ppo_np.ppo import PPO

        agent = PPO.load(_checkpoint_path(args.run_dir))  # a bad file raises CheckpointError: exit status 2
        try:
            batch = agent.collect_batch(seed=args.seed)
        finally:
            agent.close()
        checks = check_agent(agent, batch, samples=args.samples, seed=args.seed, progress=not args.json)
    else:
        checks = run_suite(seed=args.seed, trials=args.trials)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"checks": [c._asdict() for c in checks], "ok": ok}))
    else:
        width = max(len(c.component) for c in checks)
        print(f"{'component':<{width}}  {'param':<10}  {'max rel error':>13}  result")
        for c in checks:
            print(f"{c.component:<{width}}  {c.param:<10}  {c.max_rel_error:13.3e}  {'pass' if c.ok else 'FAIL'}")
        print(f"{sum(c.ok for c in checks)}/{len(checks)} checks below {DEFAULT_TOL:g}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def _cmd_study(args: argparse.Namespace) -> int:
    from ppo_np.plot import _pyplot
    from ppo_np.ppo import PPO
    from ppo_np.study import plot_study, run_study, study_summary

    agent = PPO.load(_checkpoint_path(args.run_dir))  # a bad file raises CheckpointError: exit status 2
    out = Path(args.out) if args.out else (Path(args.run_dir) if Path(args.run_dir).is_dir()
                                           else Path(args.run_dir).parent)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    plt = _pyplot()  # before the long part: a missing matplotlib is bad input
    try:
        result = run_study(agent, max_samples=args.max_samples, estimates=args.estimates, seed=args.seed,
                           value_steps=args.value_steps, landscape_episodes=args.landscape_episodes,
                           value_states=args.value_states, value_rollouts=args.value_rollouts,
                           progress=not args.json)
    finally:
        agent.close()
    (out / "study.json").write_text(json.dumps(result, indent=2))
    pngs = plot_study(result, out, plt)
    if args.json:
        print(json.dumps(result))
    else:
        print(study_summary(result))
        print("wrote " + ", ".join(str(p) for p in [out / "study.json", *pngs]))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line: the error and where the help is, not the whole usage (train's
    lists every config field)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ppo_np import __version__

    parser = _Parser(prog="ppo-np", description="PPO in NumPy + Numba, every gradient by hand.")
    parser.add_argument("--version", action="version", version=f"ppo-np {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an agent on a gymnasium environment",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("env_id", nargs="?", help="gymnasium environment id, e.g. CartPole-v1, or module:EnvId to "
                       "import the module that registers it")
    train.add_argument("--env-kwargs", nargs="+", action="extend", default=[], type=_key_value, metavar="KEY=VALUE",
                       help="keyword arguments of the environment, e.g. --env-kwargs g=9.81 (values read as JSON "
                       "where they parse, else as strings)")
    train.add_argument("--wrapper", action="append", default=[], metavar="MODULE:NAME",
                       help="wrap every environment in this importable wrapper, e.g. "
                       "gymnasium.wrappers:ClipReward (repeatable, applied in order)")
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from this preset instead of the env's own")
    train.add_argument("--total-steps", type=_positive_int, help="environment steps in total (default: the env's "
                       f"preset budget, {DEFAULT_TOTAL_STEPS}, else 1e6)")
    train.add_argument("--run-dir", help="where config.json, metrics.csv and checkpoint.npz go "
                       "(default: runs/ENV_ID_TIMESTAMP)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR (it may change "
                       f"{', '.join(RESUMABLE_FIELDS)}, recorded in config.json)")
    train.add_argument("--fork", metavar="NEW_DIR", help="with --resume: continue the run in NEW_DIR, a copy, "
                       "leaving RUN_DIR as it is")
    train.add_argument("--reschedule", action="store_true", help="with --resume and a larger --total-steps: "
                       "stretch the schedules over the new total (else they hold their final values past the "
                       "run's first total)")
    train.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                       help="set a config field, e.g. --set gae_lambda=0.9 (repeatable)")
    train.add_argument("--eval-episodes", type=_positive_int, default=20, help="evaluation episodes at the end")
    train.add_argument("--json", action="store_true", help="print one JSON line at the end, no progress bar")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--print-config", action="store_true", help="print the configuration the run would use "
                       "(preset and changes applied, as JSON) and exit without training")
    config_group = train.add_argument_group("config fields (see PPOConfig)")
    for f in dataclasses.fields(PPOConfig):
        choices = f.metadata.get("choices")
        switch = {"nargs": "?", "const": "true"} if f.type in ("bool", bool) else {}  # --tensorboard means true
        config_group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", metavar="VALUE",
                                  default=None, **switch,
                                  help=field_doc(f.name) + (f" {{{', '.join(choices)}}}" if choices else ""))
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a saved agent")
    ev.add_argument("path", help="a checkpoint .npz or a run directory")
    ev.add_argument("--episodes", type=_positive_int, default=20, help="number of episodes")
    ev.add_argument("--seed", type=_non_negative_int, default=None, help="seed of the evaluation episodes (default: "
                    "the run's seed + 10000, as train's own evaluation at the end)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions from the policy instead of its mode")
    ev.add_argument("--max-episode-steps", type=_positive_int, help="cut an episode after this many steps "
                    "(default: the environment's time limit, else 10000)")
    ev.add_argument("--video", metavar="DIR", help="record every episode to DIR/episode-J.mp4 with gymnasium's "
                    "RecordVideo (needs the video extra: pip install 'ppo-np[video]')")
    ev.add_argument("--json", action="store_true", help='print {"mean_return", "std_return", "episodes", "mean_length", "capped_episodes", '
                    '"max_episode_steps"}, and "videos" (path, return, length of each) with --video')
    ev.set_defaults(func=_cmd_eval)

    sw = sub.add_parser("sweep", help="train many seeds, over a grid of settings, as Ray tasks on every core "
                        "(or a Ray cluster), and summarise them with bootstrap intervals (pip install 'ppo-np[sweep]')",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sw.add_argument("env_id", help="gymnasium environment id, or module:EnvId")
    sw.add_argument("--seeds", default="0-4", help="seeds of every configuration: 0-9, 0,3,5 or 0-3,8")
    sw.add_argument("--grid", action="append", default=[], type=_key_value, metavar="KEY=V1,V2",
                    help="a config field and its values, crossed with the other --grid fields (repeatable; "
                    "tuples in brackets: hidden_sizes=[64,64],[32,32])")
    sw.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                    help="a config field fixed for every trial (repeatable)")
    sw.add_argument("--total-steps", type=_positive_int, help="environment steps of each trial (default: as train)")
    sw.add_argument("--out", help="the sweep's directory (default: sweeps/ENV_ID_TIMESTAMP); running the same "
                    "sweep into it again resumes it")
    sw.add_argument("--address", help="join this Ray cluster (auto, or the head's HOST:PORT) instead of starting "
                    "a Ray instance on this machine")
    sw.add_argument("--workers", type=_positive_int, help="trials at once (default: one per CPU)")
    sw.add_argument("--retries", type=_non_negative_int, default=2, help="retries of a trial that failed or whose "
                    "worker died, each from its last checkpoint")
    sw.add_argument("--eval-episodes", type=_positive_int, default=20, help="evaluation episodes of each trial")
    sw.add_argument("--env-kwargs", nargs="+", action="extend", default=[], type=_key_value, metavar="KEY=VALUE",
                    help="keyword arguments of the environment (as for train)")
    sw.add_argument("--wrapper", action="append", default=[], metavar="MODULE:NAME", help="as for train")
    sw.add_argument("--json", action="store_true", help="print the summary as one JSON object, no progress bar")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(PPOConfig):  # _config_changes reads them: --set is the sweep's way
        sw.set_defaults(**{f"cfg_{f.name}": None})
    sw.set_defaults(func=_cmd_sweep)

    cmp = sub.add_parser("compare", help="the probability that a run of one sweep beats a run of another, with "
                         "its 95%% bootstrap interval")
    cmp.add_argument("sweep_a", help="a sweep directory")
    cmp.add_argument("sweep_b", help="another sweep directory, of the same environment")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")
    cmp.set_defaults(func=_cmd_compare)

    plot = sub.add_parser("plot", help="learning curves and diagnostics of a run to PNG, and its gradients to "
                          "RUN_DIR/gradients.png when it logged them (needs matplotlib)")
    plot.add_argument("run_dir", help="a run directory holding metrics.csv")
    plot.add_argument("--out", help="output PNG (default: RUN_DIR/curves.png)")
    plot.set_defaults(func=_cmd_plot)

    grad = sub.add_parser("gradcheck", help="check every hand-written gradient against finite differences, on "
                          "random test points or, given a run, on its own weights and a batch from its env")
    grad.add_argument("run_dir", nargs="?", help="a run directory (or checkpoint): check each term of its loss, "
                      "per parameter, on a batch collected from its environment")
    grad.add_argument("--samples", type=_positive_int, default=64, help="with RUN_DIR: samples of the batch used")
    grad.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    grad.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the random test points")
    grad.add_argument("--trials", type=_positive_int, default=3, help="without RUN_DIR: random points per "
                      "component (worst kept)")
    grad.set_defaults(func=_cmd_gradcheck)

    study = sub.add_parser("study", help="a closer look at a run's gradients (Ilyas et al. 2020): concentration of "
                           "gradient estimates, alignment of PPO's minibatch steps, the value function against "
                           "Monte-Carlo returns, the landscape along the update; JSON and PNGs (needs matplotlib)")
    study.add_argument("run_dir", help="a run directory (or checkpoint)")
    study.add_argument("--max-samples", type=_positive_int, default=32_768,
                       help="state-action pairs of the largest estimate (estimates double from one batch up to it)")
    study.add_argument("--estimates", type=_int_at_least(2, "an integer >= 2"), default=8,
                       help="independent estimates per size")
    study.add_argument("--value-steps", type=_positive_int, default=2048,
                       help="steps per environment of the rollout that studies the value function")
    study.add_argument("--value-states", type=_non_negative_int, default=128,
                       help="states at which V^pi is estimated from copies of the environment (0: leave it out)")
    study.add_argument("--value-rollouts", type=_positive_int, default=8,
                       help="continuations of the policy per state for V^pi")
    study.add_argument("--landscape-episodes", type=_positive_int, default=8,
                       help="episodes per point of the landscape's true return")
    study.add_argument("--seed", type=_non_negative_int, default=0, help="seed of every rollout and draw")
    study.add_argument("--out", help="where study.json and the PNGs go (default: the run directory)")
    study.add_argument("--json", action="store_true", help="print the result as one JSON object, no progress bar")
    study.set_defaults(func=_cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for dest, value in vars(args).items():
        # Python 3.11's argparse drops a value that is exactly '--' (``--gamma=--``) and stores [] in its place
        if isinstance(value, list) and ((value == [] and dest not in ("set", "env_kwargs", "wrapper", "grid"))
                                        or [] in value):
            name = dest[len("cfg_"):] if dest.startswith("cfg_") else dest
            parser.exit(2, f"ppo-np {args.command}: error: argument --{name.replace('_', '-')}"
                           f"{f' (config field {name})' if dest.startswith('cfg_') else ''}: '--' is not a value\n")
    try:
        return args.func(args)
    except ValueError as exc:  # bad input of every kind: config values, env ids, checkpoint files
        parser.exit(2, f"ppo-np {args.command}: error: {' '.join(str(exc).splitlines())}\n")
    except KeyboardInterrupt:  # before training started (train handles its own): nothing to save
        print(f"\nppo-np {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

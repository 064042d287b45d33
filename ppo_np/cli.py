"""The ``ppo-np`` command line.

    ppo-np train ENV_ID [--preset NAME] [--total-steps N] [--run-dir DIR] [--resume DIR] [--json]
                        [--set key=value ...] [--<any config field> VALUE ...]
    ppo-np eval PATH [--episodes N] [--seed S] [--json]
    ppo-np plot RUN_DIR [--out PNG]
    ppo-np gradcheck [--json] [--seed S] [--trials K]

Every field of ``PPOConfig`` is an option of ``train`` (``--gae-lambda 0.9``), with the field's
documentation as its help; ``--set gae_lambda=0.9`` does the same. Later settings win: preset, then
``--set``, then the field options. Exit status: 0 on success, 1 when a gradient check fails or
training stops on an error, 2 on bad input (one line naming the value and what is allowed, never a
traceback), 130 on Ctrl-C (after saving a checkpoint).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ppo_np.config import DEFAULT_TOTAL_STEPS, PRESETS, PPOConfig, field_doc, field_names, parse_value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


# --- train ---------------------------------------------------------------------------------------------

def _train_config(args: argparse.Namespace, continuous: bool) -> PPOConfig:
    from ppo_np.config import preset_for

    base = PPOConfig(**PRESETS[args.preset]) if args.preset else preset_for(args.env_id, continuous)
    changes = {key: parse_value(key, text) for key, text in args.set}
    changes.update({name: parse_value(name, getattr(args, f"cfg_{name}"))
                    for name in field_names() if getattr(args, f"cfg_{name}") is not None})
    return base.replace(**changes)


def _cmd_train(args: argparse.Namespace) -> int:
    from ppo_np.ppo import CHECKPOINT_NAME, PPO, NonFiniteError, evaluate

    if args.resume:
        run_dir = Path(args.resume)
        agent = PPO.load(run_dir / CHECKPOINT_NAME, run_dir=run_dir)
        if args.env_id and args.env_id != agent.env_id:
            raise ValueError(f"--resume {run_dir} holds a run on {agent.env_id}, not {args.env_id}")
        total = args.total_steps or agent.total_steps
    else:
        if not args.env_id:
            raise ValueError("train needs an ENV_ID (or --resume RUN_DIR)")
        from ppo_np.rollout import make_vector_env
        import gymnasium as gym

        probe = make_vector_env(args.env_id, 1, "sync")
        continuous = not isinstance(probe.single_action_space, gym.spaces.Discrete)
        probe.close()
        config = _train_config(args, continuous)
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"{args.env_id}_{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / CHECKPOINT_NAME).exists():
            raise ValueError(f"run directory {run_dir} already holds a run; use --resume {run_dir} "
                             "or choose another --run-dir")
        agent = PPO(args.env_id, config, run_dir=run_dir)
        total = args.total_steps or DEFAULT_TOTAL_STEPS.get(args.env_id, 1_000_000)

    start = time.perf_counter()
    step0 = agent.global_step
    try:
        agent.learn(total, progress_bar=not args.json and not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {agent.global_step}; checkpoint saved. Resume with:\n"
              f"  ppo-np train --resume {run_dir}", file=sys.stderr)
        return 130
    except NonFiniteError as exc:
        print(f"ppo-np: training stopped: {exc}. The last good checkpoint is in {run_dir}.", file=sys.stderr)
        return 1
    finally:
        agent.close()
    wall = time.perf_counter() - start
    result = evaluate(agent, episodes=args.eval_episodes, seed=agent.config.seed + 10_000)
    summary = {"env_id": agent.env_id, "total_steps": agent.global_step, "wall_s": round(wall, 3),
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
              f"over {result['episodes']} episodes\nrun directory: {run_dir}")
    return 0


def _checkpoint_path(path: str) -> Path:
    from ppo_np.ppo import CHECKPOINT_NAME

    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def _cmd_eval(args: argparse.Namespace) -> int:
    from ppo_np.ppo import PPO, evaluate

    agent = PPO.load(_checkpoint_path(args.path))
    result = evaluate(agent, episodes=args.episodes, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{agent.env_id}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
              f"over {result['episodes']} episodes")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ppo_np.plot import plot_run

    out = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"wrote {out}")
    return 0


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from ppo_np.gradcheck import DEFAULT_TOL, run_suite

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-np", description="PPO in NumPy + Numba, every gradient by hand.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an agent on a gymnasium environment",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("env_id", nargs="?", help="gymnasium environment id, e.g. CartPole-v1")
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from this preset instead of the env's own")
    train.add_argument("--total-steps", type=_positive_int, help="environment steps in total (default: the env's "
                       f"preset budget, {DEFAULT_TOTAL_STEPS}, else 1e6)")
    train.add_argument("--run-dir", help="where config.json, metrics.csv and checkpoint.npz go "
                       "(default: runs/ENV_ID_TIMESTAMP)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    train.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                       help="set a config field, e.g. --set gae_lambda=0.9 (repeatable)")
    train.add_argument("--eval-episodes", type=_positive_int, default=20, help="evaluation episodes at the end")
    train.add_argument("--json", action="store_true", help="print one JSON line at the end, no progress bar")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_group = train.add_argument_group("config fields (see PPOConfig)")
    for f in dataclasses.fields(PPOConfig):
        choices = f.metadata.get("choices")
        config_group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", metavar="VALUE",
                                  default=None, help=field_doc(f.name) + (f" {{{', '.join(choices)}}}" if choices else ""))
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a saved agent")
    ev.add_argument("path", help="a checkpoint .npz or a run directory")
    ev.add_argument("--episodes", type=_positive_int, default=20, help="number of episodes")
    ev.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the evaluation episodes")
    ev.add_argument("--json", action="store_true", help='print {"mean_return", "std_return", "episodes"}')
    ev.set_defaults(func=_cmd_eval)

    plot = sub.add_parser("plot", help="learning curves and diagnostics of a run to PNG (needs matplotlib)")
    plot.add_argument("run_dir", help="a run directory holding metrics.csv")
    plot.add_argument("--out", help="output PNG (default: RUN_DIR/curves.png)")
    plot.set_defaults(func=_cmd_plot)

    grad = sub.add_parser("gradcheck", help="check every hand-written gradient against finite differences")
    grad.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    grad.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the random test points")
    grad.add_argument("--trials", type=_positive_int, default=3, help="random points per component (worst kept)")
    grad.set_defaults(func=_cmd_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad input of every kind: config values, env ids, checkpoint files
        parser.exit(2, f"ppo-np {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())

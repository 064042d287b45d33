"""Many runs of one environment: seeds crossed with a grid of settings, each trial an ordinary run
directory, run as Ray tasks, and summarised with bootstrap confidence intervals (``stats.py``).

    OUT/sweep.json            what the sweep is: the environment, total steps, fixed settings, grid and
                              seeds. Running the same sweep again resumes it; a different one is refused.
    OUT/LABEL/seed-S/         one trial: the run directory of ``ppo-np train`` (config.json, metrics.csv,
                              checkpoint.npz), so every command works on it, and ``result.json`` once it
                              has finished (its final evaluation). A finished trial is never written again.
    OUT/summary.json          per configuration: the final returns, their mean, median and IQM with 95%
                              bootstrap intervals, and the trials that failed or have not finished
    OUT/curves.png            each configuration's training return against steps: the IQM over seeds
                              with its 95% band

LABEL names a grid point, ``gae_lambda=0.9,learning_rate=0.001`` (``default`` without a grid). A trial's
final return is its evaluation as ``ppo-np train`` ends: ``evaluate(agent, eval_episodes,
eval_seed(agent))``, deterministic actions.

The engine is Ray (the ``sweep`` extra), as Ray Core tasks: each trial is one task of one CPU, which
loads the trial's checkpoint when it has one, trains to the total and evaluates. A task that raised, or
whose worker or node died, is submitted again, up to ``retries`` times, and every retry continues from
the trial's last checkpoint; after that the trial is reported failed with its error, and running the
sweep again retries it. Tune's schedulers (ASHA, PBT) would own the trials' directories and checkpoints; plain
tasks keep each trial a run directory of ppo-np's own, resumable by ``ppo-np train --resume`` too.

With no ``address``, the sweep starts a Ray instance on this machine, one trial per core (``workers``
caps it), listening on loopback only, and stops it at the end; a process that has called ``ray.init``
already has its instance used (and left running). With ``address`` ("auto",
or the head's HOST:PORT) it joins a running cluster (``ray start --head`` / ``ray start --address``), whose
nodes must each have ppo-np installed and see OUT at the same path (a shared filesystem).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from ppo_np.checkpoint import write_text_atomic
from ppo_np.config import DEFAULT_TOTAL_STEPS, PPOConfig
from ppo_np.rundir import CHECKPOINT_NAME

SPEC_NAME = "sweep.json"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
RESULT_NAME = "result.json"
#: each trial runs single-threaded: a trial per core beats threads inside one at these sizes
THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: how long a retried trial waits for the lock of the attempt before it (a dying worker's, released by the OS)
LOCK_WAIT_S = 60.0


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A sweep: ``env`` (an id) with ``env_kwargs`` and ``wrappers`` (importable ``module:name``), every
    configuration of the ``grid`` (field -> values, crossed) with the ``fixed`` fields set, each trained
    for ``total_steps`` with each of the ``seeds`` and evaluated over ``eval_episodes`` episodes."""

    env: str
    seeds: tuple
    grid: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)
    total_steps: Optional[int] = None
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    wrappers: tuple = ()
    eval_episodes: int = 20

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # lists where tuples were, as sweep.json holds it


@dataclasses.dataclass(frozen=True)
class Trial:
    label: str
    point: dict
    seed: int
    run_dir: str
    config: str          # PPOConfig.to_json()


def plan(spec: SweepSpec, out: Path) -> tuple[SweepSpec, list[Trial]]:
    """The spec with its defaults filled in, and its trials; a ValueError names a bad env, field or value."""
    from ppo_np.envs import EnvSource, import_name

    seeds = tuple(spec.seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be integers >= 0, at least one; got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ; got {list(seeds)}")
    if "seed" in spec.fixed:
        raise ValueError("seed cannot be fixed: the seeds of a sweep are set by its seeds")
    for field, values in spec.grid.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"grid {field}: give a list of values, got {values!r}")
        if field in spec.fixed or field == "seed":
            raise ValueError(f"grid {field}: the field is also " + ("fixed" if field != "seed" else "set by the seeds"))
    source = EnvSource.of(spec.env, spec.env_kwargs or None, [import_name(name) for name in spec.wrappers])
    total = spec.total_steps or DEFAULT_TOTAL_STEPS.get(spec.env, 1_000_000)
    if not (isinstance(total, int) and total >= 1):
        raise ValueError(f"total_steps must be an integer >= 1, got {total!r}")
    if not (isinstance(spec.eval_episodes, int) and spec.eval_episodes >= 1):
        raise ValueError(f"eval_episodes must be an integer >= 1, got {spec.eval_episodes!r}")
    spec = dataclasses.replace(spec, seeds=seeds, total_steps=total, wrappers=tuple(spec.wrappers))
    trials = []
    fields = list(spec.grid)
    for values in itertools.product(*(spec.grid[f] for f in fields)):
        point = dict(zip(fields, values))
        label = ",".join(f"{f}={_text(v)}" for f, v in point.items()) or "default"
        if trials and any(t.label == label for t in trials):
            raise ValueError(f"grid: the point {label} comes twice (a value given twice, or as two spellings of one "
                             "number); a tuple value goes in brackets: hidden_sizes=[64,64],[32,32]")
        for seed in seeds:
            config = PPOConfig.for_env(source, **spec.fixed, **point, seed=seed)  # validated, naming the field
            trials.append(Trial(label, {f: getattr(config, f) for f in fields}, seed,
                                str(out / label / f"seed-{seed}"), config.to_json()))
    return spec, trials


def _text(value) -> str:
    """A grid value as a directory name shows it."""
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value).replace(os.sep, "_")


# --- one trial, in a Ray worker ------------------------------------------------------------------------


def run_trial(spec: dict, trial: Trial) -> dict:
    """Train one trial to the spec's total steps from its checkpoint (or from scratch), evaluate it and
    write result.json; a finished trial's result is read, never rewritten. Runs in a Ray worker."""
    from ppo_np.envs import EnvSource, import_name
    from ppo_np.evaluation import eval_seed, evaluate
    from ppo_np.ppo import PPO
    from ppo_np import rundir

    run_dir = Path(trial.run_dir)
    finished = read_result(run_dir)
    if finished is not None:  # not even its lock file is touched
        return finished
    source = EnvSource.of(spec["env"], spec["env_kwargs"] or None, [import_name(name) for name in spec["wrappers"]])
    lock = _wait_for_lock(run_dir)  # held to the end: an attempt and the one it replaces never overlap
    try:
        finished = read_result(run_dir)  # checked holding the lock: the attempt before may have just finished
        if finished is not None:
            lock.release()
            return finished
        if (run_dir / CHECKPOINT_NAME).exists():
            agent = PPO.load(run_dir / CHECKPOINT_NAME, run_dir=run_dir, env=source)
        else:
            agent = PPO(source, PPOConfig.from_json(trial.config), run_dir=run_dir, overwrite=False)
    except BaseException:
        lock.release()
        raise
    agent.hold_run_dir(lock)
    try:
        rundir.remove_stale_temps(run_dir)
        start = time.perf_counter()
        if agent.global_step < spec["total_steps"]:
            agent.learn(spec["total_steps"])
        train_s = time.perf_counter() - start
        evaluation = evaluate(agent, episodes=spec["eval_episodes"], seed=eval_seed(agent))
        result = {"label": trial.label, "point": trial.point, "seed": trial.seed,
                  "final_return": evaluation["mean_return"], "evaluation": evaluation,
                  "eval_seed": eval_seed(agent), "steps": agent.global_step, "updates": agent.update_count,
                  "train_return_last20": agent.mean_recent_return(20), "train_s_last_attempt": round(train_s, 3),
                  "node": _node_address(), "pid": os.getpid()}
        write_text_atomic(run_dir / RESULT_NAME, json.dumps(result, indent=2))
    finally:
        agent.close()
    return result


def _node_address() -> str:
    """The Ray node this runs on (its IP address), or the host's name outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return os.uname().nodename


def _wait_for_lock(run_dir: Path):
    """The trial directory's lock, held, once it is free: a retry may start while the worker it replaces
    is still dying (past ``LOCK_WAIT_S``, a ``RunDirectoryInUse`` fails this attempt)."""
    from ppo_np.rundir import RunDirectoryInUse, RunLock

    lock, deadline = RunLock(run_dir), time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            lock.acquire()
            return lock
        except RunDirectoryInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- the sweep, in the driver ------------------------------------------------------------------------


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; every trial under way saved its checkpoint first."""


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, address: Optional[str] = None,
              workers: Optional[int] = None, retries: int = 2, progress: bool = False) -> dict:
    """Run every unfinished trial of ``spec`` into ``out`` (module docstring), then summarise the sweep
    (``summarize``) and return the summary. ``workers`` caps the trials running at once (default: one per
    CPU of the Ray instance). A trial that still fails after ``retries`` retries is reported in the
    summary's ``failed``, with its error. Ctrl-C raises ``SweepInterrupted`` once the running trials
    have saved their checkpoints; running the sweep again resumes it."""
    out = Path(out)
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    spec, trials = claim(spec, out)
    todo = [t for t in trials if read_result(Path(t.run_dir)) is None]
    failed = {}
    if todo:
        with ray_instance(address, workers) as ray:
            failed = _run_tasks(ray, spec, todo, workers, retries, progress)
    return summarize(out, failed)


def claim(spec: SweepSpec, out: Path) -> tuple[SweepSpec, list[Trial]]:
    """``plan``'s spec and trials, with OUT/sweep.json written (or found to be this sweep's: to resume)."""
    spec = check_output(spec, out)
    if not (out / SPEC_NAME).exists():
        try:
            write_text_atomic(out / SPEC_NAME, json.dumps(spec.to_dict(), indent=2))
        except OSError as exc:
            raise ValueError(f"cannot write the sweep into {out}: {exc.strerror or exc}") from None
    return plan(spec, out)


def check_output(spec: SweepSpec, out: str | os.PathLike) -> SweepSpec:
    """``plan``'s spec, once ``out`` is known to be new, empty, or to hold this very sweep (to resume);
    a ValueError otherwise. Nothing is written."""
    out = Path(out)
    spec, _ = plan(spec, out)
    path = out / SPEC_NAME
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} does not read as a sweep ({exc})") from None
        wanted = spec.to_dict()
        if saved != wanted or list(saved.get("grid", {})) != list(wanted["grid"]):  # the grid's order names dirs
            differ = sorted(k for k in set(saved) | set(wanted) if json.dumps(saved.get(k)) != json.dumps(wanted.get(k)))
            raise ValueError(f"{out} holds another sweep (its {', '.join(differ)} differ); running the same sweep "
                             "resumes it: give another output directory for this one")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} is not an empty directory and holds no sweep; give a new or empty output directory")
    return spec


@contextlib.contextmanager
def ray_instance(address: Optional[str] = None, workers: Optional[int] = None):
    """Ray, connected for the ``with`` block as a sweep connects it (module docstring): the process's own
    instance if it has one, else a new embedded one of ``workers`` CPUs, or the cluster at ``address``.
    Sweeps inside the block share it (and its start-up of a few seconds)."""
    ray, started = _start_ray(address, workers)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _start_ray(address: Optional[str], workers: Optional[int]):
    """Ray, connected: to this process's running instance if it has one (left running), else to a new
    embedded one or the cluster at ``address`` (shut down by the caller); and whether it was started here."""
    if address is None:
        # an embedded instance listens on loopback only, exposing no port to the user's network (Ray reads
        # this when imported); and it reports no usage statistics
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ValueError(f"ppo-np sweep runs its trials on Ray, which does not import ({exc}); install it with: "
                         "pip install 'ppo-np[sweep]'") from None
    if ray.is_initialized():
        return ray, False
    if address is None:
        from ray._private import ray_constants  # read at import: a process that imported Ray earlier

        ray_constants.ENABLE_RAY_CLUSTER = False
    _cluster_messages_to_stderr()
    if address is None:
        # "local": a new instance, even where a `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=workers or os.cpu_count(), include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False)
    else:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except ConnectionError as exc:
            raise ValueError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return ray, True


def _cluster_messages_to_stderr() -> None:
    """Ray prints the cluster's messages to the driver (a worker that died, say) on stdout, where they would
    break ``--json``: send them to stderr, beside the sweep's own messages."""
    from ray._private import worker

    print_to_stdstream = getattr(worker, "print_to_stdstream", None)
    if print_to_stdstream is None or getattr(print_to_stdstream, "to_stderr", False):
        return

    def to_stderr(data, *args, **kwargs):
        return print_to_stdstream({**data, "is_err": True}, *args, **kwargs)

    to_stderr.to_stderr = True
    worker.print_to_stdstream = to_stderr


def _run_tasks(ray, spec: SweepSpec, todo: list[Trial], workers: Optional[int], retries: int,
               progress: bool) -> dict[str, str]:
    """Run ``todo`` as Ray tasks, at most ``workers`` at once; the errors of those that failed, by run dir."""
    # Retries are the driver's, not Ray's (max_retries=0): Ray would print each retried task's traceback
    # into this process's stdout; here a retry is one more task for the trial, from its checkpoint.
    task = ray.remote(num_cpus=1, max_retries=0, runtime_env={"env_vars": dict(THREAD_ENV)})(run_trial)
    spec_dict = spec.to_dict()
    queue, running, failed, attempts = list(todo), {}, {}, {t.run_dir: 0 for t in todo}
    cap = workers or len(todo)
    bar = _trial_bar(len(todo)) if progress else None
    try:
        while queue or running:
            while queue and len(running) < cap:
                trial = queue.pop(0)
                attempts[trial.run_dir] += 1
                running[task.remote(spec_dict, trial)] = trial
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                trial = running.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # the trial's own error, or its worker or node lost
                    if attempts[trial.run_dir] <= retries:
                        queue.insert(0, trial)
                        continue
                    failed[trial.run_dir] = _error_text(exc)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(running=len(running), failed=len(failed),
                                    retried=sum(n - 1 for n in attempts.values()))
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref)  # a KeyboardInterrupt inside the trial: learn saves its checkpoint, then stops
        stopped, still = ray.wait(list(running), num_returns=len(running), timeout=LOCK_WAIT_S)
        raise SweepInterrupted(f"stopped {len(stopped)} trials under way, each after saving its checkpoint"
                               + (f"; {len(still)} did not answer within {LOCK_WAIT_S:.0f} s" if still else "")) from None
    finally:
        if bar is not None:
            bar.close()
    return failed


def _trial_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="trial", dynamic_ncols=True)


def _error_text(exc: BaseException) -> str:
    """The trial's own error, ``Type: message``, not Ray's wrapping of it with the remote traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --- what a sweep found ----------------------------------------------------------------------------------


def summarize(out: str | os.PathLike, failed: Optional[dict[str, str]] = None, write: bool = True) -> dict:
    """Read every trial of the sweep in ``out``: per configuration, ``stats.interval_estimates`` of the
    finished trials' final returns, and the trials not finished, with the errors in ``failed`` (run dir ->
    error). With ``write``, also write summary.json and curves.png."""
    from ppo_np import stats

    out = Path(out)
    spec = _read_spec(out)
    _, trials = plan(spec, out)
    failed = failed or {}
    configurations = []
    for label, group in itertools.groupby(trials, key=lambda t: t.label):
        group = list(group)
        results = [read_result(Path(t.run_dir)) for t in group]
        finished = [(t, r) for t, r in zip(group, results) if r is not None]
        scores = [r["final_return"] for _, r in finished]
        configurations.append({
            "label": label, "point": group[0].point, "seeds": [t.seed for t, _ in finished],
            "final_returns": scores,
            **(stats.interval_estimates(scores) if scores else {}),
            "unfinished": [{"seed": t.seed, "run_dir": t.run_dir, **({"error": failed[t.run_dir]}
                                                                     if t.run_dir in failed else {})}
                           for t, r in zip(group, results) if r is None]})
    summary = {"env": spec.env, "total_steps": spec.total_steps, "eval_episodes": spec.eval_episodes,
               "statistics": f"final return per trial (deterministic evaluation); mean, median and IQM with "
                             f"{stats.CONFIDENCE:.0%} percentile bootstrap intervals over seeds "
                             f"({stats.RESAMPLES} resamples)",
               "configurations": configurations}
    if not write:
        return summary
    write_text_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=2))
    curves = {c["label"]: [Path(t.run_dir) for t in trials if t.label == c["label"] and t.seed in c["seeds"]]
              for c in configurations}
    if any(curves.values()):
        from ppo_np.plot import plot_sweep

        summary["curves"] = str(plot_sweep(curves, out / CURVES_NAME, spec.env))
    return summary


def _read_spec(out: Path) -> SweepSpec:
    path = out / SPEC_NAME
    try:
        data = json.loads(path.read_text())
        return SweepSpec(**{**data, "seeds": tuple(data["seeds"]), "wrappers": tuple(data["wrappers"])})
    except FileNotFoundError:
        raise ValueError(f"{out} holds no sweep ({SPEC_NAME} is missing)") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} does not read as a sweep ({type(exc).__name__}: {exc})") from None


def read_result(run_dir: Path) -> Optional[dict]:
    """A trial's result.json, None unless it is there, readable and finite: a trial is finished by it."""
    path = run_dir / RESULT_NAME
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
        return result if math.isfinite(result["final_return"]) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compare(out_a: str | os.PathLike, out_b: str | os.PathLike) -> dict:
    """P(a run of A beats a run of B), with its interval, for each configuration of sweep A against each
    of sweep B (``stats.probability_of_improvement`` of their final returns)."""
    from ppo_np import stats

    specs = _read_spec(Path(out_a)), _read_spec(Path(out_b))
    for field in ("env", "env_kwargs", "wrappers"):
        if getattr(specs[0], field) != getattr(specs[1], field):
            raise ValueError(f"the sweeps ran different environments ({field} {getattr(specs[0], field)!r} and "
                             f"{getattr(specs[1], field)!r}): their returns do not compare")
    a, b = summarize(out_a, write=False), summarize(out_b, write=False)
    pairs = []
    for config_a, config_b in itertools.product(a["configurations"], b["configurations"]):
        if not config_a["final_returns"] or not config_b["final_returns"]:
            continue
        pairs.append({"a": config_a["label"], "b": config_b["label"],
                      "seeds_a": len(config_a["final_returns"]), "seeds_b": len(config_b["final_returns"]),
                      "probability_of_improvement": stats.probability_of_improvement(
                          config_a["final_returns"], config_b["final_returns"])})
    if not pairs:
        raise ValueError(f"no finished trials to compare in {out_a} and {out_b}")
    return {"env": a["env"], "a": str(out_a), "b": str(out_b), "pairs": pairs,
            "total_steps": [a["total_steps"], b["total_steps"]], "eval_episodes": [a["eval_episodes"], b["eval_episodes"]]}


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-3,8"`` as the seeds they name, in order."""
    seeds = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            span = range(int(low), int(high) + 1) if sep else [int(low)]
        except ValueError:
            raise ValueError(f"seeds: cannot read {part.strip()!r} in {text!r}; write 0-9, 0,3,5 or 0-3,8") from None
        if sep and int(high) < int(low):
            raise ValueError(f"seeds: {part.strip()!r} runs backwards")
        seeds.extend(span)
    return tuple(seeds)


def parse_grid_values(text: str) -> list[str]:
    """``"0.9,0.95"`` as ``["0.9", "0.95"]``; commas inside brackets stay: ``"[64,64],[32,32]"``."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    if any(not v.strip() for v in values):
        raise ValueError(f"grid values {text!r}: an empty value; write key=v1,v2")
    return [v.strip() for v in values]


def grid_from_args(items: Sequence[tuple[str, str]]) -> dict:
    """``--grid key=v1,v2`` pairs as {field: [parsed values]}, each value parsed as the field's type."""
    from ppo_np.config import parse_value

    grid = {}
    for key, text in items:
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; list all its values once: --grid {key}=v1,v2")
        grid[key] = [parse_value(key, v) for v in parse_grid_values(text)]
    return grid

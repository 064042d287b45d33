"""A run directory: what a training run writes so that it can be read back and resumed.

    config.json      the environment (``env_id``, and ``env_recipe``: the id, kwargs and wrapper names that
                     rebuild it, null when names cannot), the total steps, every hyperparameter as it is
                     now, and ``config_changes``: each field changed on resume, with the update after which
    metrics.csv      one row per update, the columns ``METRIC_FIELDS`` (a missing value is empty)
    gradients.csv    with ``log_gradients``: one row per update, the columns ``GRADIENT_FIELDS`` and each
                     parameter's gradient norm (``actor/W0``, ..., ``critic/b2``)
    tensorboard/     with ``tensorboard``: the same values as TensorBoard event files (``TensorBoardLog``)
    checkpoint.npz   the agent's state (``PPO.save``), named ``CHECKPOINT_NAME``
    .lock            held by the one process writing the run (``RunLock``): its pid and start time

Every column is documented in the README ("The run directory"). A resumed run continues both CSVs from
its checkpoint: rows of updates past the checkpoint's (written after it, by the run that was stopped)
are dropped, so every update appears once. Whole files are
rewritten atomically (``checkpoint.write_text_atomic``), so a kill leaves the old file or the new one;
rows are appended, and a last line that a kill cut short is skipped when the file is read back.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import time
from pathlib import Path

from ppo_np.checkpoint import remove_stale_temps as remove_stale_temp_files, write_text_atomic

CHECKPOINT_NAME = "checkpoint.npz"
GRADIENTS_NAME = "gradients.csv"
METRIC_FIELDS = ("update", "step", "wall_s", "steps_per_s", "episode_return", "episode_length", "policy_loss",
                 "value_loss", "entropy", "approx_kl_k1", "approx_kl_k3", "exact_kl", "clip_frac",
                 "explained_variance", "learning_rate", "clip_range", "ent_coef", "beta", "temperature",
                 "grad_norm", "epochs_run", "max_kl", "step_size", "line_search_backtracks", "cg_residual")
LOCK_NAME = ".lock"
GRADIENT_FIELDS = ("update", "step", "grad_norm", "clip_scale_actor", "clip_scale_critic", "outside_share")
TENSORBOARD_NAME = "tensorboard"
#: the TensorBoard section of each metrics column (update and step are the axes, not charts)
TENSORBOARD_SECTIONS = {
    "episode": ("episode_return", "episode_length"),
    "loss": ("policy_loss", "value_loss", "entropy", "grad_norm"),
    "update": ("approx_kl_k1", "approx_kl_k3", "exact_kl", "clip_frac", "explained_variance", "epochs_run"),
    "schedule": ("learning_rate", "clip_range", "ent_coef", "beta", "temperature"),
    "trpo": ("max_kl", "step_size", "line_search_backtracks", "cg_residual"),
    "time": ("wall_s", "steps_per_s"),
}


def start(run_dir: Path, env_id: str, env_recipe: dict | None, total_steps: int, config, update: int,
          gradient_columns: list[str] | None = None, config_changes: list[dict] | None = None) -> None:
    """Create ``run_dir``, write config.json, and rewrite metrics.csv (and, with ``gradient_columns``,
    gradients.csv) as its header and the rows of updates 1..``update`` (those the agent's state already
    holds; none for a new run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.json", json.dumps(
        {"env_id": env_id, "env_recipe": env_recipe, "total_steps": total_steps, **dataclasses.asdict(config),
         "config_changes": config_changes or []}, indent=2))
    _restart_csv(run_dir / "metrics.csv", METRIC_FIELDS, update)
    if gradient_columns is not None:
        _restart_csv(run_dir / GRADIENTS_NAME, (*GRADIENT_FIELDS, *gradient_columns), update)
    elif update == 0:  # a run written over: the old one's gradients are not this one's
        (run_dir / GRADIENTS_NAME).unlink(missing_ok=True)


def _restart_csv(path: Path, fields, update: int) -> None:
    """``path`` rewritten as the header ``fields`` and its rows of updates 1..``update``."""
    rows = _read_metrics(path) if path.exists() else []
    kept = [r for r in rows if _update_of(r) <= update]  # drop rows past the checkpoint
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept)
    write_text_atomic(path, text.getvalue())  # a kill here leaves the old file or the new one


def remove_stale_temps(run_dir: Path) -> None:
    """Temporary files of writes killed mid-way (never mistaken for the files themselves): call it holding
    the run's lock, when they are the writer's to delete."""
    remove_stale_temp_files(*(run_dir / name for name in (CHECKPOINT_NAME, "metrics.csv", "config.json",
                                                          GRADIENTS_NAME)))


def append_metrics(run_dir: Path, row: dict) -> None:
    """Append one update's row to metrics.csv (keys outside ``METRIC_FIELDS`` are not written)."""
    _append(run_dir / "metrics.csv", METRIC_FIELDS, row)


def append_gradients(run_dir: Path, row: dict, gradient_columns: list[str]) -> None:
    """Append one update's row to gradients.csv: ``GRADIENT_FIELDS`` and the per-parameter norms."""
    _append(run_dir / GRADIENTS_NAME, (*GRADIENT_FIELDS, *gradient_columns), row)


def _append(path: Path, fields, row: dict) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writerow({k: row.get(k, "") for k in fields})


def _read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics file, without a last line that a kill cut short (no newline) or a malformed row."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [r for r in csv.DictReader(io.StringIO(text, newline="")) if None not in r and None not in r.values()
            and _update_of(r) >= 0]


def _update_of(row: dict) -> int:
    """The update number of a metrics row; -1 when it is not a number."""
    try:
        return int(float(row["update"]))
    except (TypeError, ValueError, OverflowError):
        return -1


class RunDirectoryInUse(ValueError):
    """Another process holds the run directory's lock."""


class RunLock:
    """The exclusive lock of a run directory: one writer at a time.

    An OS file lock (``flock``) on RUN_DIR/.lock, so the lock goes with the process that holds it, a
    SIGKILLed one included; the file says who holds it (pid and start time) for the message of a writer
    that is refused. ``acquire`` raises ``RunDirectoryInUse`` naming the holder.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)   # the umask decides, as for every run file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirectoryInUse(f"run directory {self.path.parent} is in use by {holder}; wait for it to end "
                                    "or choose another run directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the file releases the lock
            self._fd = None


def check_new_run_dir(run_dir: str | os.PathLike, overwrite: bool) -> Path:
    """``run_dir`` as a Path, refused (ValueError) when empty, the current directory, or a directory that
    already holds a run (a checkpoint) and ``overwrite`` is not set."""
    if str(run_dir).strip() == "":
        raise ValueError("run_dir is empty; give a directory for the run's files (or None to write nothing)")
    path = Path(run_dir)
    if path.resolve() == Path.cwd().resolve():
        raise ValueError(f"run_dir {str(run_dir)!r} is the current directory; give a directory of its own for the "
                         "run's files")
    if (path / CHECKPOINT_NAME).exists() and not overwrite:
        raise ValueError(f"run directory {path} already holds a run; resume it with PPO.load(path / "
                         f"'{CHECKPOINT_NAME}', run_dir=path), or pass overwrite=True to replace it")
    return path


def tensorboard_writer_class():
    """tensorboardX's ``SummaryWriter``; a ValueError saying how to install it when it is missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ValueError(f"tensorboard=True writes with tensorboardX, which does not import ({exc}); install it "
                         "with: pip install 'ppo-np[tensorboard]'") from None
    return SummaryWriter


class TensorBoardLog:
    """RUN_DIR/tensorboard: each update's metrics (and gradient norms) as TensorBoard scalars at its
    environment step, tagged ``section/column`` (``TENSORBOARD_SECTIONS``; gradients.csv's columns under
    ``gradients/``), written by tensorboardX. Missing values (NaN, as in an update where no episode
    ended) are not written.

    Each ``learn`` adds an event file, which purges the events of older files past the run's step: a
    stopped run's after its checkpoint, all of a run written over. So every update appears once, as in
    the CSVs. A run that turns TensorBoard on when resumed, with no events yet, gets its earlier
    updates from the CSVs first.
    """

    def __init__(self, run_dir: Path, step: int, update: int, gradient_columns: list[str] | None):
        directory = run_dir / TENSORBOARD_NAME
        backfill = update > 0 and not directory.exists()
        metric_tags = {column: f"{section}/{column}" for section, columns in TENSORBOARD_SECTIONS.items()
                       for column in columns}
        gradient_tags = {column: f"gradients/{column}" for column in (*GRADIENT_FIELDS, *(gradient_columns or ()))
                         if column not in metric_tags and column not in ("update", "step")}
        self._tags = {**metric_tags, **(gradient_tags if gradient_columns is not None else {})}
        # tensorboardX names a file by the second it was made in; the update it starts at tells apart (and
        # orders) the files of one second, which would otherwise overwrite each other
        # purge_step hides the events past the run's state in the older files: a stopped run's after its
        # checkpoint, and all of a run written over (update 0)
        self._writer = tensorboard_writer_class()(str(directory), purge_step=step + 1,
                                                  filename_suffix=f".update{update:09d}")
        try:
            if backfill:
                for name, tags in (("metrics.csv", metric_tags), (GRADIENTS_NAME, gradient_tags)):
                    rows = _read_metrics(run_dir / name) if (run_dir / name).exists() else []
                    for row in rows:
                        if _update_of(row) <= update:
                            self._write(row, tags)
        except BaseException:
            self._writer.close()
            raise

    def write(self, row: dict) -> None:
        """One update's row (the metrics, and the gradient norms with ``log_gradients``)."""
        self._write(row, self._tags)

    def _write(self, row: dict, tags: dict[str, str]) -> None:
        step = int(float(row["step"]))
        for column, tag in tags.items():
            value = row.get(column, "")
            if value != "" and value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

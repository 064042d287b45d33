"""Checkpoints: one ``.npz`` of named arrays, written atomically, read without pickle.

Layout: every entry is a plain numeric or unicode array, so ``np.load(..., allow_pickle=False)``
reads it and loading can never execute code. Keys are ``group/name`` (``actor/W0``,
``adam_actor/m/W0``, ``obs_rms/mean``, ...); ``format_version`` and ``kind`` identify the file.

Writing: to a temporary file in the same directory, flushed and fsynced, then ``os.replace`` onto
the final name. A crash at any moment leaves either the old checkpoint or the new one, never half
of one.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
KIND = "ppo-np checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, foreign, too new or does not fit the agent."""


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (plus the format header) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": np.array(FORMAT_VERSION), "kind": np.array(KIND), **arrays}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of a checkpoint; a ``CheckpointError`` says what is wrong with a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable ppo-np checkpoint ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zlib and zipfile raise a zoo of types on damaged bytes
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if "kind" not in arrays or arrays["kind"].shape != () or str(arrays["kind"]) != KIND:
        raise CheckpointError(f"{path} is not a ppo-np checkpoint (no '{KIND}' header)")
    version = arrays.get("format_version")
    if version is None or version.shape != () or not np.issubdtype(version.dtype, np.integer):
        raise CheckpointError(f"{path} has no valid format_version")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {int(version)}, newer than this ppo-np reads "
                              f"({FORMAT_VERSION}); upgrade ppo-np to load it")
    return arrays


def take(arrays: dict[str, np.ndarray], key: str, like: np.ndarray | None = None) -> np.ndarray:
    """``arrays[key]``, checked for presence (and shape and dtype kind when ``like`` is given)."""
    if key not in arrays:
        raise CheckpointError(f"checkpoint is missing {key!r}")
    value = arrays[key]
    if like is not None:
        if value.shape != like.shape:
            raise CheckpointError(f"checkpoint entry {key!r} has shape {value.shape}, the agent expects {like.shape}")
        if value.dtype.kind != like.dtype.kind:
            raise CheckpointError(f"checkpoint entry {key!r} has dtype {value.dtype}, the agent expects {like.dtype}")
    return value

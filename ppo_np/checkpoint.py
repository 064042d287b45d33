"""Checkpoints: one ``.npz`` of named arrays, written atomically, read without pickle, verified on load.

Layout: every entry is a plain numeric or unicode array, stored uncompressed (``np.savez``), so
loading can never execute code. Keys are ``group/name`` (``actor/W0``, ``adam_actor/m/W0``,
``obs_rms/mean``, ...); ``format_version`` and ``kind`` identify the file.

Writing: to a temporary file ``.NAME.XXXX.tmp`` in the same directory, flushed and fsynced, then
``os.replace`` onto the final name. A crash at any moment leaves either the old checkpoint or the new
one, never half of one; at worst a stale temporary file stays behind, which no loader ever opens
(``remove_stale_temps`` deletes it). A state holding a NaN or inf is refused, so a run that went bad
never overwrites its last good checkpoint.

Reading treats the file as untrusted. ``np.load`` is not used: it reads a member only as far as the
member's own ``.npy`` header says, so a damaged header (shape ``(64, 64)`` read as ``(64, 6)``, dtype
``<f4`` read as ``<f2``) loads silently without reaching the end of the member, where zipfile checks
the CRC-32. Here every member is read whole, so its CRC-32 is always verified, then parsed by
``numpy.lib.format.read_array(allow_pickle=False)``, which must consume it exactly. Members must be
uncompressed ``.npy`` files (memory is then bounded by the file's size), the central directory must
hold as many entries as its end record declares (zipfile silently drops those a damaged length field
hides), float entries must be finite, and ``kind`` and ``format_version`` are checked before anything
else is read. Every failure
is a ``CheckpointError`` (a ``ValueError``) naming the file and what is wrong with it.
"""
from __future__ import annotations

import glob
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
KIND = "ppo-np checkpoint"
_HEADER = ("kind", "format_version")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, foreign, too new or does not fit the agent."""


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (plus the format header) to ``path`` atomically; returns the path.

    Refuses (``CheckpointError``, nothing written) object arrays, keys that clash with the header,
    and float arrays holding a NaN or inf: the checkpoint already on disk stays as it was.
    """
    path = Path(path)
    for key, value in arrays.items():
        value = np.asarray(value)
        if key in _HEADER:
            raise CheckpointError(f"checkpoint entry {key!r} is reserved for the format header")
        if value.dtype.hasobject:
            raise CheckpointError(f"checkpoint entry {key!r} is an object array; only numeric and unicode "
                                  "arrays can be stored without pickle")
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise CheckpointError(f"refusing to write {path}: entry {key!r} holds non-finite numbers "
                                  "(the checkpoint already there, if any, is kept)")
    payload = {"format_version": np.array(FORMAT_VERSION), "kind": np.array(KIND), **arrays}
    # object arrays were refused above: nothing is pickled
    return _write_atomic(path, lambda f: np.savez(f, **payload))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace the file ``path`` by ``text`` (UTF-8) atomically: a crash leaves the old file or the new one."""
    data = text.encode("utf-8")
    return _write_atomic(Path(path), lambda f: f.write(data))


def _write_atomic(path: Path, write) -> Path:
    """``write(f)`` into a temporary file beside ``path``, fsync it, rename it onto ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; run files get what the user's umask gives
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def remove_stale_temps(*paths: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that atomic writes of ``paths`` killed mid-way left behind; returns them.

    Only names of the form ``.NAME.*.tmp`` beside each path are touched. Call it when no other
    process is writing those files (at the start of a run or a resume).
    """
    stale = sorted(Path(p) for path in map(Path, paths) for p in
                   glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


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
    """Read and verify every array of a checkpoint; a ``CheckpointError`` says what is wrong with a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            _check_directory(path, f, zf)
            arrays = _read_members(path, zf)
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile, zlib and the .npy parser raise a zoo of types on damaged bytes
        raise CheckpointError(f"{path} is not a readable ppo-np checkpoint ({type(exc).__name__}: {exc})") from None
    for key, value in arrays.items():
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: entry {key!r} holds non-finite numbers")
    return arrays


def _check_directory(path: Path, f, zf: zipfile.ZipFile) -> None:
    """Every entry the zip's end record declares was read: a damaged length field in the central
    directory (a comment or extra field grown over the entries after it) makes zipfile drop those
    entries without a word."""
    end = zipfile._EndRecData(f)  # the end-of-central-directory record, zip64 or not (what ZipFile parsed)
    declared = {end[zipfile._ECD_ENTRIES_THIS_DISK], end[zipfile._ECD_ENTRIES_TOTAL]}
    if declared != {len(zf.infolist())}:
        raise CheckpointError(f"{path} is damaged (its directory declares {max(declared)} entries, "
                              f"{len(zf.infolist())} could be read)")


def _read_members(path: Path, zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """Every member as an array: the header first (so a newer file is reported as newer), then the rest."""
    infos = {}
    for info in zf.infolist():
        key = info.filename[:-len(".npy")]
        if not info.filename.endswith(".npy") or info.is_dir():
            raise CheckpointError(f"{path} is not a ppo-np checkpoint (unexpected entry {info.filename!r})")
        if key in infos:
            raise CheckpointError(f"{path} is damaged (entry {key!r} appears twice)")
        infos[key] = info
    arrays = {}
    for key in _HEADER:
        if key in infos:
            arrays[key] = _read_array(path, zf, key, infos[key])
    kind = arrays.get("kind")
    if kind is None or kind.shape != () or kind.dtype.kind != "U" or str(kind) != KIND:
        raise CheckpointError(f"{path} is not a ppo-np checkpoint (no '{KIND}' header)")
    version = arrays.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) < 1:
        raise CheckpointError(f"{path} has no valid format_version")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {int(version)}, newer than this ppo-np reads "
                              f"({FORMAT_VERSION}); upgrade ppo-np to load it")
    for key, info in infos.items():
        if key not in arrays:
            arrays[key] = _read_array(path, zf, key, info)
    return arrays


def _read_array(path: Path, zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> np.ndarray:
    """One member, read whole (zipfile verifies its CRC-32 at the end) and parsed exactly."""
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise CheckpointError(f"{path}: entry {key!r} is compressed; ppo-np checkpoints store arrays "
                              "uncompressed (np.savez)")
    raw = zf.read(info)
    stream = io.BytesIO(raw)
    array = np.lib.format.read_array(stream, allow_pickle=False)
    if stream.tell() != len(raw):
        raise CheckpointError(f"{path} is damaged (entry {key!r} has {len(raw) - stream.tell()} bytes more than "
                              "its shape and dtype account for)")
    return array


def take(arrays: dict[str, np.ndarray], key: str, like: np.ndarray | None = None, *,
         ndim: int | None = None, kinds: str | None = None) -> np.ndarray:
    """``arrays[key]``, checked for presence and for fitting the agent.

    With ``like``: the same shape, the same dtype kind and, for floats, the same precision (a float16
    entry where float32 weights belong is refused, not cast). ``ndim`` and ``kinds`` (dtype kind
    letters, e.g. ``"f"`` or ``"iu"``) check entries whose length varies.
    """
    if key not in arrays:
        raise CheckpointError(f"checkpoint is missing {key!r}")
    value = arrays[key]
    if like is not None:
        if value.shape != like.shape:
            raise CheckpointError(f"checkpoint entry {key!r} has shape {value.shape}, the agent expects {like.shape}")
        if value.dtype.kind != like.dtype.kind or (like.dtype.kind in "fc" and value.dtype != like.dtype):
            raise CheckpointError(f"checkpoint entry {key!r} has dtype {value.dtype}, the agent expects {like.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise CheckpointError(f"checkpoint entry {key!r} has {value.ndim} dimensions, the agent expects {ndim}")
    if kinds is not None and value.dtype.kind not in kinds:
        raise CheckpointError(f"checkpoint entry {key!r} has dtype {value.dtype}, the agent expects kind {kinds!r}")
    return value

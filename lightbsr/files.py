"""File helpers shared by every stage: atomic writes, output checks and content hashes (no torch)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from lightbsr.errors import ConfigError, LightBSRError

TEMPORARY_PREFIX = ".lbsr-"
"""Temporaries of :func:`atomic_output`: ``.lbsr-XXXXXXXX.partial`` + the output's suffix, short whatever the name."""
_MAX_KEPT_SUFFIX = 16


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted (SIGINT, and SIGTERM under the CLI) or failed write leaves neither a partial
    file nor the temporary. The temporary's name is chosen, and known to the cleanup, before the
    file exists, so no signal can land between its creation and the cleanup that removes it.
    Its name has a fixed length (``.lbsr-XXXXXXXX.partial.png``), so any output name the file
    system takes works. It keeps ``path``'s suffix (when short), so libraries that choose a
    format by extension (OpenCV, ONNX external data) behave as they would on ``path``. An
    ``OSError`` about the temporary is re-raised about ``path``, the name the user gave.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if len(target.suffix) <= _MAX_KEPT_SUFFIX else ""
    tmp: Path | None = None
    try:
        while True:
            tmp = target.parent / f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}.partial{suffix}"
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                continue
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # created 0600 (as some writers also do); give what open() would
        tmp.replace(target)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        renamed = _about_target(err, tmp, target)
        if renamed is not None:
            raise renamed from err
        raise


def _about_target(err: BaseException, tmp: Path | None, target: Path) -> BaseException | None:
    """``err`` reworded to name ``target`` instead of the temporary, or None when it does not name it."""
    if tmp is None:
        return None
    if isinstance(err, OSError) and err.filename is not None and os.fspath(err.filename) == str(tmp):
        return OSError(err.errno, err.strerror, str(target))
    if isinstance(err, LightBSRError) and str(tmp) in str(err):
        return type(err)(str(err).replace(str(tmp), str(target)))
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_outputs(inputs: Iterable[str | os.PathLike[str]], outputs: Iterable[str | os.PathLike[str]]) -> None:
    """ConfigError when an output would replace an input, or two outputs are the same file (before any work).

    When ``outputs`` are made one per input (same length), a collision names the two inputs.
    Paths are compared as the files they name (symbolic links and ``..`` resolved; an existing file
    also by device and inode, so a hard link to an input counts as the input).
    """
    sources = [Path(p) for p in inputs]
    targets = [Path(p) for p in outputs]
    paired = len(sources) == len(targets)  # outputs made one per input: name the inputs that collide
    seen: dict[Path, int] = {}
    for index, output in enumerate(targets):
        key = output.resolve()
        if key in seen:
            first = seen[key]
            if paired:
                raise ConfigError(
                    f"{sources[first]} and {sources[index]} would both be written to {output}; "
                    "rename one, or choose another --format"
                )
            raise ConfigError(f"{targets[first]} and {output} are the same output file; give each output its own name")
        seen[key] = index
        for source in sources:
            if key == source.resolve() or (output.exists() and source.exists() and _same_file(output, source)):
                raise ConfigError(f"{output}: the output would replace the input {source}; choose another output")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()

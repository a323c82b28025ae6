"""One exception type per failure kind.

Every error the toolkit raises on purpose derives from :class:`LightBSRError`;
the CLI turns these into one line on stderr and exit status 2. Anything else
is a bug and is allowed to show its traceback.
"""

from __future__ import annotations


class LightBSRError(Exception):
    """Base class of all expected, user-facing failures."""


class InputImageError(LightBSRError):
    """An input image is missing, unreadable, empty, or of an unsupported kind."""


class InputVideoError(LightBSRError):
    """An input video is missing, corrupt or truncated, has no video stream, or a codec this FFmpeg cannot decode."""


class CheckpointError(LightBSRError):
    """A checkpoint is missing, corrupt, of the wrong architecture, or has bad keys."""


class ModelFileError(LightBSRError):
    """A model file (ONNX, engine, ...) is missing, corrupt, or of the wrong kind."""


class ConfigError(LightBSRError):
    """An unknown architecture, scale, setting or an inconsistent option."""


class BackendUnavailableError(LightBSRError):
    """A backend (ONNX Runtime, TensorRT, CUDA, ...) is not installed or usable here."""


class EngineMismatchError(LightBSRError):
    """A TensorRT engine was built for another GPU, TensorRT version or model."""


class EngineBuildError(LightBSRError):
    """TensorRT could not build an engine from a (parsed) network."""


class DatasetError(LightBSRError):
    """A dataset folder is missing or holds no usable images."""


class OutOfMemoryError(LightBSRError):
    """The work does not fit in the device's memory, even after splitting it (smaller tiles)."""


class LightBSRWarning(RuntimeWarning, UserWarning):
    """A warning of lightbsr's own (the CLI shows these as one line each; third-party warnings are not shown).

    Both a RuntimeWarning and a UserWarning, the categories lightbsr warned with before it had its own.
    """


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none).

    The one formatter of a third-party error inside a one-line lightbsr message.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def one_line(err: BaseException) -> str:
    """The whole message of an error on one line (whitespace collapsed), as the CLI prints it."""
    return " ".join(str(err).split()) or type(err).__name__

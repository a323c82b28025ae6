"""lightbsr checkpoints: safetensors weights with the model config inside, never pickle.

A checkpoint is one ``.safetensors`` file whose header metadata holds
``lightbsr.config`` (JSON: arch, family, role, scale, setting) and
``lightbsr.version``; optional extra metadata (training iterations, source
checkpoint hash, ...) rides along as strings. Authors'-layout checkpoints
(``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, or
``.safetensors``) are turned into ours by :func:`convert_reference_file`.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from lightbsr._version import __version__
from lightbsr.errors import CheckpointError, ConfigError, first_line
from lightbsr.files import atomic_output, sha256_file
from lightbsr.models import (
    ModelConfig,
    build_model,
    detect_reference_arch,
    load_reference_checkpoint,
)
from lightbsr.models.convert import load_strict, unwrap_state_dict

CONFIG_KEY = "lightbsr.config"
VERSION_KEY = "lightbsr.version"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    config: ModelConfig,
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights (optionally cast to ``dtype``, floating tensors only) atomically."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state.items()
    }
    header = {**(metadata or {}), CONFIG_KEY: json.dumps(config.to_dict()), VERSION_KEY: __version__}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (empty if none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(err)})") from err


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, str]]:
    """Read a lightbsr checkpoint: (state dict, config, metadata)."""
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: a {path.suffix} file is not a lightbsr checkpoint; convert it with `lightbsr convert`"
        )
    metadata = read_metadata(path)
    if CONFIG_KEY not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without a lightbsr config "
            "(an authors'-layout checkpoint? run `lightbsr convert`)"
        )
    try:
        config = ModelConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: bad lightbsr config in header: {first_line(err)}") from err
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors file ({first_line(err)})") from err
    return state, config, metadata


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model a lightbsr checkpoint describes, in float32 and eval mode."""
    state, config, _ = read_checkpoint(path)
    model = build_model(config)
    try:
        load_strict(model, state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return model.to(device).eval(), config


def read_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` file via ``torch.load(weights_only=True)``."""
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(err)})") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe pickles
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
            # torch's message goes on to suggest weights_only=False, i.e. running the file's code: never that
            raise CheckpointError(
                f"{path}: refused: the file holds more than tensors (Python objects or code that loading would run); "
                "lightbsr reads weights-only PyTorch checkpoints, or .safetensors"
            ) from err
        raise CheckpointError(f"{path}: cannot read as a weights-only PyTorch checkpoint ({first_line(err)})") from err
    try:
        return unwrap_state_dict(obj)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err


def convert_reference_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    arch: str | None = None,
    *,
    setting: int | None = None,
    pca_basis: torch.Tensor | None = None,
    pca: str | os.PathLike[str] | None = None,
) -> ModelConfig:
    """Authors'-layout checkpoint file → lightbsr checkpoint; ``arch`` is checked against the keys, or detected.

    A LightBSR teacher needs the PCA basis of its run: ``pca`` (the ``PCA_matrix.mat`` saved
    beside it, :func:`read_pca_matrix`) or ``pca_basis`` (15, 441); it is stored in the checkpoint.
    """
    state = read_state_dict_file(src)
    if pca is not None:
        if pca_basis is not None:
            raise ConfigError("give the PCA basis once: pca (a file) or pca_basis (a tensor)")
        pca_basis = read_pca_matrix(pca)
    if pca_basis is None and _is_lightbsr_teacher(state):
        raise CheckpointError(
            f"{src}: an authors' LightBSR teacher needs the PCA basis its run saved beside it: pass --pca "
            "PCA_matrix.mat (the checkpoint does not hold the basis, and the teacher's degradation prior is "
            "computed on it)"
        )
    try:
        config = ModelConfig.from_arch(arch or detect_reference_arch(state).arch, setting)
        model = load_reference_checkpoint(state, config.arch, pca_basis=pca_basis)
    except CheckpointError as err:
        raise CheckpointError(f"{src}: {err}") from err
    save_checkpoint(dst, model, config, metadata={"lightbsr.source_sha256": sha256_file(src)})
    return config


def _is_lightbsr_teacher(state: dict[str, torch.Tensor]) -> bool:
    """Whether an authors'-layout state dict is a LightBSR teacher's."""
    try:
        detected = detect_reference_arch(state)
    except CheckpointError:
        return False
    return (detected.family, detected.role) == ("lightbsr", "teacher")


def read_pca_matrix(path: str | os.PathLike[str], key: str = "p") -> torch.Tensor:
    """The authors' ``PCA_matrix.mat`` (``key`` ``p``: 441 × 15, one basis vector per column) as our (15, 441) basis."""
    from lightbsr.degradation import KERNEL_SIZE
    from lightbsr.matfile import read_mat_matrix
    from lightbsr.models import LightBSRTeacher

    matrix = read_mat_matrix(path, key)
    expected = (KERNEL_SIZE * KERNEL_SIZE, LightBSRTeacher.PCA_DIM)
    if matrix.shape != expected:
        raise ConfigError(
            f"{path}: {key!r} is {'×'.join(map(str, matrix.shape))}; the teacher's PCA basis is "
            f"{expected[0]}×{expected[1]} ({KERNEL_SIZE}×{KERNEL_SIZE} kernels, {expected[1]} components)"
        )
    if not np.isfinite(matrix).all():
        raise ConfigError(f"{path}: {key!r} holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(matrix.T)).float()


def _require_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")

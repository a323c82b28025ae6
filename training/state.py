"""Resume state of a training run: safetensors shards and JSON, never pickle.

A run folder keeps its latest resume state under ``RUN/state/``::

    state/latest.json             {"dir": "iter-00012000"}   (replaced atomically)
    state/iter-00012000/
        manifest.json             iteration, config, optimizer hyper-parameters, GradScaler,
                                  RNG states (one per rank), log accumulators, best score, ...
        model-000.safetensors     the model's state dict (float32, buffers included)
        optimizer-000.safetensors Adam moments and step counters, keyed by parameter name
        optimizer-001.safetensors ...

Every file stays below :data:`MAX_FILE_BYTES` (16 MiB): tensors are packed greedily
into shards of at most :data:`SHARD_PAYLOAD_BYTES`. A new state is written into a
temporary folder, renamed into place, and only then does ``latest.json`` point at it;
older states are removed afterwards. A crash at any moment leaves the previous state
(or the new one) complete and pointed at.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lightbsr.errors import CheckpointError
from lightbsr.files import atomic_output

__all__ = [
    "MAX_FILE_BYTES",
    "SHARD_PAYLOAD_BYTES",
    "STATE_FORMAT",
    "capture_rng",
    "latest_state_dir",
    "load_optimizer_state",
    "optimizer_state_tensors",
    "read_manifest",
    "read_shards",
    "read_state",
    "restore_rng",
    "write_json",
    "write_shards",
    "write_state",
]

MAX_FILE_BYTES = 16 * 2**20
"""Every file a run writes stays strictly below this size (a 16 MiB-per-file transfer channel)."""

SHARD_PAYLOAD_BYTES = MAX_FILE_BYTES - 2**20
"""Tensor bytes per shard; the remaining MiB is room for the safetensors header."""

STATE_FORMAT = "lightbsr.train-state/1"
STATE_DIR = "state"
LATEST = "latest.json"


# --------------------------------------------------------------------------- shards


def write_shards(
    folder: Path, prefix: str, tensors: Mapping[str, torch.Tensor], payload: int = SHARD_PAYLOAD_BYTES
) -> list[str]:
    """Write ``tensors`` as ``prefix-000.safetensors``, ``prefix-001…`` with at most ``payload`` bytes each.

    Tensors keep their order; returns the file names.

    Raises:
        CheckpointError: one tensor alone is larger than ``payload``.
    """
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in tensors.items():
        tensor = value.detach().contiguous().cpu()
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > payload:
            raise CheckpointError(f"tensor {key} ({nbytes} bytes) does not fit in a {payload}-byte shard")
        if size + nbytes > payload and groups[-1]:
            groups.append({})
            size = 0
        groups[-1][key] = tensor
        size += nbytes
    names = []
    for index, group in enumerate(groups):
        name = f"{prefix}-{index:03d}.safetensors"
        save_file(group, str(folder / name))
        if (folder / name).stat().st_size >= MAX_FILE_BYTES:
            raise CheckpointError(f"{folder / name} is not below {MAX_FILE_BYTES} bytes")
        names.append(name)
    return names


def read_shards(folder: Path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors of the shards ``names`` in ``folder``, merged."""
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        path = folder / name
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot read resume shard ({err})") from err
    return tensors


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict, indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- optimizer


def optimizer_state_tensors(
    optimizer: torch.optim.Optimizer, names: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer's state dict: per-parameter tensors keyed ``name/field``, the rest as JSON.

    ``names`` are the parameter names in the order the optimizer holds them.
    """
    state = optimizer.state_dict()
    ids = [pid for group in state["param_groups"] for pid in group["params"]]
    if len(ids) != len(names):
        raise CheckpointError(f"optimizer holds {len(ids)} parameters but {len(names)} names were given")
    name_of = dict(zip(ids, names, strict=True))
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, fields in state["state"].items():
        for field, value in fields.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name_of[pid]}/{field}"] = value
            else:
                scalars.setdefault(name_of[pid], {})[field] = value
    groups = [
        {**{k: v for k, v in group.items() if k != "params"}, "params": [name_of[pid] for pid in group["params"]]}
        for group in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, names: Sequence[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """The inverse of :func:`optimizer_state_tensors`, for an optimizer over the same named parameters."""
    current = optimizer.state_dict()
    ids = [pid for group in current["param_groups"] for pid in group["params"]]
    id_of = dict(zip(names, ids, strict=True))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, field = key.rpartition("/")
        if name not in id_of:
            raise CheckpointError(f"resume state has optimizer state for unknown parameter {name!r}")
        per_param.setdefault(id_of[name], {})[field] = value
    for name, fields in meta.get("scalars", {}).items():
        per_param.setdefault(id_of[name], {}).update(fields)
    groups = []
    for group in meta["param_groups"]:
        unknown = [n for n in group["params"] if n not in id_of]
        if unknown:
            raise CheckpointError(f"resume state names parameters this model lacks: {unknown[:3]}")
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in group.items() if k != "params"}
        groups.append({**hyper, "params": [id_of[n] for n in group["params"]]})
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"optimizer state does not match this run: {err}") from err


# --------------------------------------------------------------------------- RNG


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global RNG states (python, numpy, torch CPU, and the CUDA device's) as a JSON-able dict."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if device.type == "cuda":
        state["cuda"] = _b64(torch.cuda.get_rng_state(device))
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`capture_rng` captured (the CUDA state only when running on CUDA)."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(_unb64(state["cuda"]), device)


# --------------------------------------------------------------------------- whole states


def latest_state_dir(run: Path) -> Path | None:
    """The folder of the run's latest complete resume state, or ``None``."""
    pointer = run / STATE_DIR / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{pointer}: unreadable resume pointer ({err})") from err
    folder = run / STATE_DIR / str(name)
    if not (folder / "manifest.json").is_file():
        raise CheckpointError(f"{pointer} points at {folder}, which holds no manifest.json")
    return folder


def write_state(
    run: Path,
    iteration: int,
    manifest: Mapping[str, Any],
    model_state: Mapping[str, torch.Tensor],
    optimizer_tensors: Mapping[str, torch.Tensor],
) -> Path:
    """Write a complete resume state for ``iteration`` and make it the latest; returns its folder."""
    root = run / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"iter-{iteration:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    try:
        files = {
            "model": write_shards(tmp, "model", model_state),
            "optimizer": write_shards(tmp, "optimizer", optimizer_tensors),
        }
        write_json(tmp / "manifest.json", {"format": STATE_FORMAT, **manifest, "iteration": iteration, "files": files})
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.replace(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(root / LATEST, {"dir": name})
    for entry in root.iterdir():
        if entry.is_dir() and entry.name != name:
            shutil.rmtree(entry, ignore_errors=True)
    return final


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a resume-state folder (checked to be one)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: unreadable manifest.json ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != STATE_FORMAT or "files" not in manifest:
        raise CheckpointError(f"{folder}: not a lightbsr training state")
    return manifest


def read_state(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(manifest, model state, optimizer tensors) of a resume-state folder."""
    manifest = read_manifest(folder)
    files = manifest["files"]
    return manifest, read_shards(folder, files["model"]), read_shards(folder, files["optimizer"])

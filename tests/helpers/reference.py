"""Re-create the reference weights from a key list, as the reference README prescribes.

The authors' code is not shipped; its checkpoints are re-created from the key list
with numpy's legacy RandomState (a frozen stream), so the weights here equal the
ones that produced ``out.*`` in ``data/reference/*.io.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

REFERENCE_DIR = Path(__file__).parent.parent / "data" / "reference"
SEEDS = {
    "lightbsr_student_x4": 1,
    "lightbsr_teacher_x4_setting1": 2,
    "lightbsr_teacher_x4_setting2": 2,
    "kdsr_student_m_x4": 3,
    "kdsr_teacher_m_x4": 4,
}
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def reference_meta(name: str) -> dict:
    return json.loads((REFERENCE_DIR / f"{name}.json").read_text())


def reference_io(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE_DIR / f"{name}.io.safetensors"))


def reference_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The authors'-layout state dict of ``name`` (deterministic weights)."""
    keys: dict[str, list[int]] = reference_meta(name)["keys"]
    rs = np.random.RandomState(SEEDS[name])
    state: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        shape = tuple(keys[key])
        if key.endswith("num_batches_tracked") or key.endswith("queue_ptr"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if "sub_mean." in key or "add_mean." in key:
            sign = -1.0 if "sub_mean." in key else 1.0
            value = np.eye(3).reshape(3, 3, 1, 1) if key.endswith("weight") else sign * np.array(RGB_MEAN)
        elif key.endswith("running_var"):
            value = rs.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean"):
            value = rs.normal(0.0, 0.1, shape)
        elif key.endswith("queue"):
            value = rs.normal(0, 1, shape)
            value /= np.linalg.norm(value, axis=0, keepdims=True)
        elif len(shape) >= 2:
            value = rs.normal(0, 1, shape) / np.sqrt(np.prod(shape[1:]))
        else:
            value = rs.uniform(-0.5, 0.5, shape)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float64).astype(np.float32))
    return state


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def reference_pca_basis() -> torch.Tensor:
    """A (15, 441) PCA basis for the reference LightBSR teachers, whose checkpoints do not hold one.

    The reference outputs take the DRP as an input, so they do not depend on it; the basis only has
    to be a basis (the authors' run saves theirs beside the checkpoint as PCA_matrix.mat).
    """
    from lightbsr.degradation import kernel_pca

    return kernel_pca(samples=500)


def load_reference_model(name: str) -> torch.nn.Module:
    """The model ``name`` with the reference weights, converted from the authors' layout (teachers get a basis)."""
    from lightbsr.models import load_reference_checkpoint

    basis = reference_pca_basis() if name.startswith("lightbsr_teacher") else None
    return load_reference_checkpoint(reference_state_dict(name), name, pca_basis=basis)

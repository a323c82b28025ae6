"""Shared fixtures of the export tests: reference checkpoints, their ONNX exports (once per session), a tiny model."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from reference import load_reference_model
from torch import nn

from lightbsr.checkpoint import save_checkpoint
from lightbsr.models import REFERENCE_ARCHS, ModelConfig, build_model

SPLIT_ARCHS = ("lightbsr_student_x4", "kdsr_student_m_x4")
"""The deployable students are exported with --split; teachers as one graph."""
SIMPLIFIED_ARCHS = ("lightbsr_student_x4",)
"""onnxslim takes 10–60 s per model on 2 cores: the suite simplifies the LightBSR student (and the tiny model)
only; the others are tested as traced (``--no-simplify``), which is the graph onnxslim starts from."""


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """PyTorch on one thread: on a busy 2-core machine its OpenMP threads can make a tiny forward take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


@dataclass
class Exported:
    arch: str
    checkpoint: Path
    onnx: Path
    model: nn.Module
    summary: dict


def reference_checkpoint(folder: Path, arch: str) -> tuple[Path, nn.Module]:
    model = load_reference_model(arch)
    path = save_checkpoint(folder / f"{arch}.safetensors", model, ModelConfig.from_arch(arch))
    return path, model


def _export(folder: Path, arch: str) -> Exported:
    from lightbsr.cli import main
    from lightbsr.export import export_onnx

    checkpoint, model = reference_checkpoint(folder, arch)
    onnx_path = folder / f"{arch}.onnx"
    if arch == "lightbsr_student_x4":  # through the CLI, with the built-in verification
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["export", str(checkpoint), "-o", str(onnx_path), "--split", "--json"])
        if code != 0:
            raise RuntimeError(f"lightbsr export exited {code}")
        summary = json.loads(out.getvalue())
    else:
        result = export_onnx(
            checkpoint, onnx_path, split=arch in SPLIT_ARCHS, simplify=arch in SIMPLIFIED_ARCHS, verify=False
        )
        summary = result.to_dict()
    return Exported(arch, checkpoint, onnx_path, model, summary)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """Every reference architecture exported once (see SPLIT_ARCHS and SIMPLIFIED_ARCHS)."""
    folder = tmp_path_factory.mktemp("exported")
    with single_torch_thread():
        return {arch: _export(folder, arch) for arch in REFERENCE_ARCHS}


def tiny_lightbsr(seed: int = 0) -> nn.Module:
    """A LightBSR student cut down to one group of one block: the same operators in a graph ~30× smaller."""
    torch.manual_seed(seed)
    model = build_model("lightbsr_student_x4")
    model.groups = nn.ModuleList(model.groups[:1])
    model.groups[0].blocks = nn.ModuleList(model.groups[0].blocks[:1])
    return model.eval()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """The tiny LightBSR exported with its split graphs."""
    from lightbsr.export import export_onnx

    model = tiny_lightbsr()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with single_torch_thread():
        export_onnx(model, path, config=ModelConfig.from_arch("lightbsr_student_x4", setting=1), split=True)
    return path, model


def _cut_reference(arch: str) -> nn.Module:
    """The reference-weight student of ``arch`` cut down to one block (LightBSR: one group of one block;
    KDSR: one restoration block and one estimator block): the same operators, a graph ~30× smaller."""
    from runtime_models import reference_student

    model = reference_student(arch)
    if arch.startswith("lightbsr"):
        model.groups = nn.ModuleList(model.groups[:1])
        model.groups[0].blocks = nn.ModuleList(model.groups[0].blocks[:1])
    else:
        model.blocks = nn.ModuleList(model.blocks[:1])
        model.estimator.blocks = model.estimator.blocks[:1]
    return model.eval()


@pytest.fixture(scope="session")
def tiny_reference_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cut-down reference-weight LightBSR student as split ONNX graphs (plain ``torch.onnx.export``).

    Unlike :func:`tiny_lightbsr` (an initialisation, whose blocks barely act) its blocks act; but its
    channel IDR hardly changes from image to image (the reference weights saturate the estimator).
    """
    from runtime_models import export_onnx

    path = tmp_path_factory.mktemp("tiny-reference") / "tiny.onnx"
    with single_torch_thread():
        return export_onnx(_cut_reference("lightbsr_student_x4"), path, arch="lightbsr_student_x4")


@pytest.fixture(scope="session")
def tiny_kdsr_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cut-down reference-weight KDSR student as split ONNX graphs: its (global) IDR changes from image to
    image, and its output with it (a few levels of 255 with another image's IDR)."""
    from runtime_models import export_onnx

    path = tmp_path_factory.mktemp("tiny-kdsr") / "tiny_kdsr.onnx"
    with single_torch_thread():
        return export_onnx(_cut_reference("kdsr_student_m_x4"), path, arch="kdsr_student_m_x4")

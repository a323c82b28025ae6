"""Small models for the runtime tests and figures: reference-weight checkpoints and plain ONNX exports.

The ONNX files follow :mod:`lightbsr.contract` (tensor names, metadata, split-graph file
names) using nothing but ``torch.onnx.export`` of ``estimate``/``restore`` wrappers, so
the runtime is tested without the export stage. Also a command, for the runtime's
consistency figures::

    python tests/helpers/runtime_models.py runs/runtime-ref            # LightBSR student, reference weights
    python tests/helpers/runtime_models.py runs/runtime-init --weights init   # build_model's initialisation, seed 0

writes ``ARCH_TAG.safetensors`` and ``ARCH_TAG.onnx`` (+ ``.estimator.onnx`` / ``.restorer.onnx``), TAG = ref or init.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from reference import load_reference_model

from lightbsr import contract
from lightbsr._version import __version__
from lightbsr.checkpoint import save_checkpoint
from lightbsr.files import sha256_file
from lightbsr.models import ModelConfig, build_model

OPSET = 17


def reference_student(arch: str = "lightbsr_student_x4") -> nn.Module:
    """A student with the deterministic reference weights (random-looking, not trained)."""
    return load_reference_model(arch)


def save_reference_checkpoint(path: Path, arch: str = "lightbsr_student_x4") -> Path:
    return save_checkpoint(path, reference_student(arch), ModelConfig.from_arch(arch))


class _Estimator(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        idr = self.model.estimate(lr)
        return idr if isinstance(idr, tuple) else (idr,)


class _Restorer(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor, *idr: torch.Tensor) -> torch.Tensor:
        return self.model.restore(lr, idr if len(idr) > 1 else idr[0])


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    arch: str,
    graphs: tuple[str, ...] = (contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER),
    source_sha256: str = "",
) -> Path:
    """Export ``model`` to ``path`` (full graph) and/or its split graphs beside it, with contract metadata."""
    config = ModelConfig.from_arch(arch)
    names = contract.idr_names(config.family)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        idr = _Estimator(model)(lr)
    pixel = {0: "batch", 2: "height", 3: "width"}
    sr_pixel = {0: "batch", 2: "sr_height", 3: "sr_width"}
    estimator_path, restorer_path = contract.split_paths(path)
    plans = {
        contract.GRAPH_FULL: (path, model, (lr,), [contract.INPUT_LR], [contract.OUTPUT_SR]),
        contract.GRAPH_ESTIMATOR: (estimator_path, _Estimator(model), (lr,), [contract.INPUT_LR], list(names)),
        contract.GRAPH_RESTORER: (
            restorer_path,
            _Restorer(model),
            (lr, *idr),
            [contract.INPUT_LR, *names],
            [contract.OUTPUT_SR],
        ),
    }
    for graph in graphs:
        target, module, args, inputs, outputs = plans[graph]
        axes = {name: pixel if name in (contract.INPUT_LR, contract.IDR_SPATIAL) else {0: "batch"} for name in inputs}
        axes |= {
            name: sr_pixel if name == contract.OUTPUT_SR else pixel if name == contract.IDR_SPATIAL else {0: "batch"}
            for name in outputs
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(target),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        set_metadata(
            target,
            {
                contract.META_ARCH: arch,
                contract.META_FAMILY: config.family,
                contract.META_SCALE: str(config.scale),
                contract.META_SETTING: "",
                contract.META_GRAPH: graph,
                contract.META_PRECISION: "fp32",
                contract.META_SOURCE_SHA256: source_sha256,
                contract.META_VERSION: __version__,
            },
        )
    return path


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--arch", default="lightbsr_student_x4", choices=("lightbsr_student_x4", "kdsr_student_m_x4"))
    parser.add_argument(
        "--weights",
        default="reference",
        choices=("reference", "init"),
        help="reference: the reference vectors' weights; init: build_model's initialisation with torch seed 0",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.weights == "reference":
        model, tag = reference_student(args.arch), "ref"
    else:
        torch.manual_seed(0)
        model, tag = build_model(args.arch).eval(), "init"
    checkpoint = save_checkpoint(args.out / f"{args.arch}_{tag}.safetensors", model, ModelConfig.from_arch(args.arch))
    graphs = (contract.GRAPH_FULL, contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER)
    onnx_path = export_onnx(
        model,
        args.out / f"{args.arch}_{tag}.onnx",
        arch=args.arch,
        graphs=graphs,
        source_sha256=sha256_file(checkpoint),
    )
    print(f"wrote {checkpoint} and {onnx_path} (+ split graphs)")


if __name__ == "__main__":
    main()

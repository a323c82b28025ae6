"""The backend interface and the registry that picks a backend module by name (no torch).

A backend runs one model on one device and exposes the two halves the tiler needs:

* ``estimate(lr) -> IDR``: ``lr`` is float32 ``(N, 3, H, W)`` in [0, 1]; the IDR is a dict
  from the contract's tensor names (:func:`lightbsr.contract.idr_names`) to float32
  arrays: ``idr_channel (N, 48)`` and ``idr_spatial (N, 8, H, W)`` for LightBSR,
  ``idr (N, 64)`` for KDSR. Arrays with 4 dimensions are per-pixel at LR resolution
  (the tiler crops them with the tile); the others are global (shared by every tile).
* ``restore(lr, idr) -> sr``: float32 ``(N, 3, scale·H, scale·W)``, not clamped.

Adding a backend is one module, ``lightbsr.runtime.<name>_backend``, listed in
:data:`BACKENDS`, defining ``load(model_path, *, device, precision, **options) -> Backend``.
A backend whose inputs have a limited size (TensorRT engines: their shape profiles)
says so with :attr:`Backend.max_input_size`, and the tiler keeps its tiles within it.
"""

from __future__ import annotations

import abc
import importlib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from lightbsr import contract
from lightbsr.errors import BackendUnavailableError, ConfigError, ModelFileError

IDR = dict[str, np.ndarray]

BACKENDS: dict[str, str] = {
    "torch": "lightbsr.runtime.torch_backend",
    "onnxruntime": "lightbsr.runtime.onnxruntime_backend",
    "tensorrt": "lightbsr.runtime.tensorrt_backend",
    "openvino": "lightbsr.runtime.openvino_backend",
}
"""Backend name → module defining ``load(...)``; the order is the order ``auto`` prefers."""

MODEL_SUFFIXES: dict[str, str] = {
    ".safetensors": "torch",
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}
"""Model file suffix → the backend that runs it (what ``backend="auto"`` picks)."""

BUILDS_FROM: dict[str, tuple[str, ...]] = {"tensorrt": (".onnx",), "openvino": (".onnx",)}
"""Backends that also take another kind of model file, converted when loaded (TensorRT builds engines from ONNX;
OpenVINO compiles ONNX graphs)."""

COMPUTE_PRECISIONS = ("fp32", "fp16", "bf16")
"""What a backend may be asked to compute in (``--fp16``/``--bf16``); engine precisions are another set."""


@dataclass(frozen=True)
class Workload:
    """What a run will ask of a backend: LR image sizes ``(height, width)`` (empty: unknown) and the tiling.

    Passed to a backend's ``load``; a backend that compiles for fixed sizes (TensorRT engines
    built from an ONNX) sizes itself from it, the others ignore it.
    """

    image_sizes: tuple[tuple[int, int], ...] = ()
    tile: int | None = None
    tile_batch: int = 1
    shared_idr: bool = True


class Backend(abc.ABC):
    """One model on one device. Subclasses set the attributes in ``__init__``."""

    name: ClassVar[str]
    family: str
    """``"lightbsr"`` or ``"kdsr"``."""
    scale: int
    device: str
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    precision: str
    """``"fp32"``, ``"fp16"`` or ``"bf16"`` (``"int8"``: a quantized TensorRT engine): the precision the network
    computes in."""

    @property
    def device_kind(self) -> str:
        """``"cuda"`` or ``"cpu"`` (what the memory model and tile caps key on)."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def can_split(self) -> bool:
        """Whether :meth:`estimate` and :meth:`restore` are available (else only :meth:`forward`)."""
        return True

    @abc.abstractmethod
    def estimate(self, lr: np.ndarray) -> IDR:
        """LR ``(N, 3, H, W)`` → IDR (see the module docstring)."""

    @abc.abstractmethod
    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        """LR ``(N, 3, H, W)`` and its IDR → SR ``(N, 3, scale·H, scale·W)``, float32, unclamped."""

    def forward(self, lr: np.ndarray) -> np.ndarray:
        """LR → SR in one go (``restore(lr, estimate(lr))``)."""
        return self.restore(lr, self.estimate(lr))

    @property
    def max_input_size(self) -> tuple[int, int] | None:
        """Largest LR ``(height, width)`` one :meth:`restore`/:meth:`forward` call takes, or ``None``: no limit.

        The tiler caps its tiles to fit (a TensorRT engine accepts only the shapes of its profiles).
        """
        return None

    @property
    def can_estimate_in_tiles(self) -> bool:
        """Whether :meth:`estimate_in_tiles` is available."""
        return False

    def estimate_in_tiles(self, lr: np.ndarray, tile: int) -> IDR:
        """The IDR of :meth:`estimate`, computed ``tile`` × ``tile`` at a time (for images too large for one go)."""
        raise NotImplementedError(f"the {self.name} backend cannot estimate in tiles")

    @property
    def can_restore_in_tiles(self) -> bool:
        """Whether :meth:`restore_in_tiles` is available (exact tiling, see :class:`~lightbsr.runtime.Upscaler`)."""
        return False

    def restore_in_tiles(
        self, lr: np.ndarray, idr: IDR, tile: int, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """:meth:`restore` of the whole image, computed ``tile`` × ``tile`` at a time, equal to it up to rounding."""
        raise NotImplementedError(f"the {self.name} backend cannot restore in exact tiles")

    def free_memory(self) -> int | None:
        """Bytes free on this backend's device, or ``None`` if it cannot tell."""
        from lightbsr.runtime.memory import available_ram

        return available_ram() if self.device_kind == "cpu" else None

    def is_out_of_memory(self, err: BaseException) -> bool:
        """Whether ``err`` is an allocation failure that a smaller tile may avoid."""
        return isinstance(err, MemoryError)

    def release_memory(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Give cached memory back after an out-of-memory error (before retrying)."""

    def describe(self) -> dict[str, Any]:
        """What runs: for logs and ``--json``."""
        return {
            "backend": self.name,
            "family": self.family,
            "scale": self.scale,
            "device": self.device,
            "precision": self.precision,
        }


GRAPH_INPUT_TYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
"""ONNX input type → the numpy type fed to it: the exported graphs take float32 or float16 tensors."""


def check_graph(
    path: Path, graph: str, meta: Mapping[str, str], inputs: Mapping[str, str], outputs: Collection[str]
) -> tuple[str, int]:
    """(family, scale) of an ONNX ``graph`` file from its metadata, tensors and input types (ModelFileError if not)."""
    family, scale = contract.check_metadata(path, graph, meta)
    contract.check_io(path, graph, family, inputs, outputs)
    for name, kind in inputs.items():
        if kind not in GRAPH_INPUT_TYPES:
            raise ModelFileError(f"{path}: input {name!r} is {kind}; expected float or float16")
    return family, scale


def typed_feeds(feeds: Mapping[str, np.ndarray], inputs: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``feeds`` as contiguous arrays of the types the graph's ``inputs`` ({name: ONNX type}) take."""
    return {name: np.ascontiguousarray(value, dtype=GRAPH_INPUT_TYPES[inputs[name]]) for name, value in feeds.items()}


class Graph(Protocol):
    """One loaded ONNX graph of a graph-running backend (ONNX Runtime, OpenVINO), its contract checked."""

    path: Path
    family: str
    scale: int
    source: str
    """The ``lightbsr.source_sha256`` metadata: which checkpoint the graph was exported from."""
    outputs: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs (float32, in :attr:`outputs` order) for these inputs."""
        ...


class GraphBackend(Backend):
    """A backend running exported graphs: the split pair (estimator + restorer), or the full graph alone.

    Subclasses open the graphs and call :meth:`_set_graphs`; estimating, restoring and the checks are here.
    """

    estimator: Graph | None
    restorer: Graph | None
    full: Graph | None
    paths: list[Path]

    def _set_graphs(self, opened: dict[str, Any], files: contract.ModelGraphs) -> None:
        """Keep the opened graphs (by :mod:`contract` graph name), once they agree on the model they come from."""
        self.estimator = opened.get(contract.GRAPH_ESTIMATOR)
        self.restorer = opened.get(contract.GRAPH_RESTORER)
        self.full = opened.get(contract.GRAPH_FULL)
        graphs: list[Graph] = list(opened.values())
        if len({(g.family, g.scale, g.source) for g in graphs}) > 1:
            raise ModelFileError(f"{files.estimator} and {files.restorer} were not exported from the same model")
        self.family, self.scale, self.paths = graphs[0].family, graphs[0].scale, [g.path for g in graphs]

    @property
    def can_split(self) -> bool:
        return self.estimator is not None

    def _require_split(self) -> tuple[Graph, Graph]:
        if self.estimator is None or self.restorer is None:
            raise ModelFileError(
                f"{self.paths[0]} has no split graphs beside it ({contract.GRAPH_ESTIMATOR}/{contract.GRAPH_RESTORER}"
                " .onnx): a shared degradation estimate needs them; re-export the model, or use per-tile estimates"
            )
        return self.estimator, self.restorer

    def estimate(self, lr: np.ndarray) -> IDR:
        estimator, _ = self._require_split()
        return dict(zip(estimator.outputs, estimator.run({contract.INPUT_LR: lr}), strict=True))

    def restore(self, lr: np.ndarray, idr: IDR) -> np.ndarray:
        _, restorer = self._require_split()
        feeds = {contract.INPUT_LR: lr, **{name: idr[name] for name in contract.idr_names(self.family)}}
        return restorer.run(feeds)[0]

    def forward(self, lr: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full.run({contract.INPUT_LR: lr})[0]
        return super().forward(lr)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "graphs": [str(p) for p in self.paths]}


def model_kind(model_path: str | os.PathLike[str]) -> str | None:
    """The backend a model file's suffix says runs it (:data:`MODEL_SUFFIXES`), or None for another suffix."""
    return MODEL_SUFFIXES.get(Path(model_path).suffix.lower())


def choose_backend(name: str, model_path: str | os.PathLike[str]) -> str:
    """The backend that runs ``model_path``: ``name``, or for ``"auto"`` the one its suffix says.

    The one place a backend is decided (callers pass the result down); a backend that
    cannot run that kind of file, or an unknown kind, is a ConfigError.
    """
    suffix = Path(model_path).suffix.lower()
    expected = model_kind(model_path)
    if expected is None:
        known = ", ".join(f"{s} ({b})" for s, b in MODEL_SUFFIXES.items())
        raise ConfigError(f"{model_path}: unknown model file type {suffix or '(no suffix)'!r}; expected one of {known}")
    if name == "auto":
        return expected
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    if expected != name and suffix not in BUILDS_FROM.get(name, ()):
        raise ConfigError(
            f"{model_path}: the {name} backend does not run {suffix} files (those run on the {expected} backend)"
        )
    return name


def check_precision(precision: object) -> None:
    """ConfigError unless ``precision`` is ``None`` or one of :data:`COMPUTE_PRECISIONS`."""
    if precision is not None and precision not in COMPUTE_PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(COMPUTE_PRECISIONS)}")


def load_backend(
    name: str,
    model_path: str | os.PathLike[str],
    *,
    device: str = "auto",
    precision: str | None = None,
    workload: Workload | None = None,
    **options: Any,
) -> Backend:
    """Open ``model_path`` with backend ``name`` (``"auto"``: by the file's suffix, :func:`choose_backend`).

    Every stage opens model files through here. ``workload`` says what the run will ask
    (image sizes, tiling); a backend that compiles for fixed sizes sizes itself from it.
    """
    name = choose_backend(name, model_path)
    check_precision(precision)
    path = Path(model_path)
    graphs = contract.resolve_graphs(path)
    if not path.exists() and not (name != "torch" and graphs.split):
        raise ModelFileError(f"{path}: no such model file")
    module = _backend_module(name)
    backend: Backend = module.load(path, device=device, precision=precision, workload=workload, **options)
    return backend


def _backend_module(name: str) -> Any:
    module_name = BACKENDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise BackendUnavailableError(
                f"the {name} backend is not part of this lightbsr build yet; use --backend onnxruntime or torch"
            ) from err
        raise BackendUnavailableError(
            f"the {name} backend needs the Python package {err.name!r}, which is not installed"
        ) from err

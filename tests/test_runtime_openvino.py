"""The openvino backend: agreement with torch and ONNX Runtime, precision pinned, contract checks, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from export_fixtures import single_torch_thread, tiny_lightbsr
from runtime_models import export_onnx, reference_student, save_reference_checkpoint

from lightbsr import contract
from lightbsr.benchmarks.consistency import psnr
from lightbsr.cli import main
from lightbsr.errors import BackendUnavailableError, ConfigError, ModelFileError
from lightbsr.runtime import Upscaler

ROOT = Path(__file__).resolve().parent.parent
ARCH = "lightbsr_student_x4"
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="OpenVINO is not installed (lightbsr[openvino])"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference-weight LightBSR student as a checkpoint and as split ONNX graphs (and the full graph)."""
    folder = tmp_path_factory.mktemp("openvino")
    checkpoint = save_reference_checkpoint(folder / "student.safetensors", ARCH)
    graphs = (contract.GRAPH_FULL, contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER)
    model = export_onnx(reference_student(ARCH), folder / "student.onnx", arch=ARCH, source_sha256="abc", graphs=graphs)
    return {"checkpoint": checkpoint, "onnx": model}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).random((3, 20, 24)).astype(np.float32)


@needs_openvino
def test_openvino_agrees_with_torch_and_onnxruntime(exported: dict[str, Path], image: np.ndarray) -> None:
    torch_whole = Upscaler(exported["checkpoint"], tile=0)
    ov_whole = Upscaler(exported["onnx"], backend="openvino", tile=0)
    backend = ov_whole.backend
    assert backend.name == "openvino" and backend.can_split and backend.device == "cpu"
    assert (backend.precision, backend.describe()["inference_precision"]) == ("fp32", "f32")
    expected = torch_whole.upscale_lr(image)
    assert psnr(expected, ov_whole.upscale_lr(image)) >= 60
    assert psnr(Upscaler(exported["onnx"], tile=0).upscale_lr(image), ov_whole.upscale_lr(image)) >= 60
    torch_tiled = Upscaler(torch_whole.backend, tile=16, tile_overlap=8, tile_batch=2, tiling="blend")
    ov_tiled = Upscaler(backend, tile=16, tile_overlap=8, tile_batch=2)
    assert psnr(torch_tiled.upscale_lr(image), ov_tiled.upscale_lr(image)) >= 60
    assert ov_tiled.last_run.tiles == 4
    full = Upscaler(exported["onnx"], backend="openvino", tile=0, split=False)
    assert not full.backend.can_split and psnr(expected, full.upscale_lr(image)) >= 60
    described = backend.describe()
    assert json.loads(json.dumps(described)) == described


@needs_openvino
def test_bf16_is_bf16_or_refused(exported: dict[str, Path], image: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightbsr.runtime import openvino_backend

    if openvino_backend.cpu_has_bf16(openvino_backend.ov.Core()):
        up = Upscaler(exported["onnx"], backend="openvino", precision="bf16", tile=0)
        assert (up.backend.precision, up.backend.describe()["inference_precision"]) == ("bf16", "bf16")
        fp32 = Upscaler(exported["onnx"], backend="openvino", tile=0).upscale_lr(image)
        error = float(np.linalg.norm(up.upscale_lr(image) - fp32) / np.linalg.norm(fp32))
        assert 1e-5 < error < 0.05  # BF16 (8-bit mantissa): near FP32, but not FP32's rounding
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda core: False)
    with pytest.raises(BackendUnavailableError, match="no BF16 instructions"):
        Upscaler(exported["onnx"], backend="openvino", precision="bf16")


@needs_openvino
def test_a_precision_openvino_did_not_take_is_refused(
    exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO may compute in another precision than asked (its default is BF16 on BF16 CPUs): never silently."""
    from lightbsr.runtime import openvino_backend

    ov = openvino_backend.ov

    class Compiled:  # the real compiled model, reporting BF16 whatever it was asked
        def __init__(self, compiled: object) -> None:
            self.compiled = compiled

        def get_property(self, name: str) -> object:
            return ov.Type.bf16 if name == "INFERENCE_PRECISION_HINT" else self.compiled.get_property(name)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.compiled, name)

    class Core(ov.Core):  # type: ignore[misc, name-defined]
        def compile_model(self, *args: object, **kwargs: object) -> Compiled:
            return Compiled(super().compile_model(*args, **kwargs))

    monkeypatch.setattr(ov, "Core", Core)
    with pytest.raises(
        BackendUnavailableError, match=r"chose to compute student\.estimator\.onnx in bf16, not the f32"
    ):
        Upscaler(exported["onnx"], backend="openvino")


@needs_openvino
def test_precision_device_and_options_are_checked(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="computes in fp32 or bf16, not fp16"):
        Upscaler(exported["onnx"], backend="openvino", precision="fp16")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Upscaler(exported["onnx"], backend="openvino", device="cuda")
    with pytest.raises(ConfigError, match=r"the openvino backend does not run \.safetensors"):
        Upscaler(exported["checkpoint"], backend="openvino")
    with pytest.raises(ConfigError, match="unknown openvino backend option"):
        Upscaler(exported["onnx"], backend="openvino", providers=["CPUExecutionProvider"])
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        Upscaler(bad, backend="openvino")
    other = tmp_path / "m.onnx"
    for source, target in zip(
        contract.split_paths(exported["onnx"]), contract.split_paths(other), strict=True
    ):  # a restorer labelled as an estimator: refused before OpenVINO compiles it
        shutil.copy(source, target)
    shutil.copy(contract.split_paths(exported["onnx"])[1], contract.split_paths(other)[0])
    with pytest.raises(ModelFileError, match="not the estimator graph"):
        Upscaler(other, backend="openvino")


@needs_openvino
def test_an_int8_export_says_int8(exported: dict[str, Path], tmp_path: Path) -> None:
    """The precision of an INT8 file comes from its metadata (its Q/DQ pairs run as OpenVINO's integer kernels)."""
    copy = tmp_path / "q.onnx"
    for source, target in zip(contract.split_paths(exported["onnx"]), contract.split_paths(copy), strict=True):
        model = onnx.load(str(source))
        entry = model.metadata_props.add()
        entry.key, entry.value = contract.META_PRECISION, "int8"
        onnx.save(model, str(target))
    backend = Upscaler(copy, backend="openvino").backend
    assert (backend.precision, backend.describe()["graph_precision"]) == ("int8", "int8")


@needs_openvino
def test_upscale_cli_runs_openvino(exported: dict[str, Path], tmp_path: Path) -> None:
    rgb = (np.random.default_rng(4).random((10, 12, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), rgb)
    argv = ["upscale", "-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", str(exported["onnx"])]
    assert main([*argv, "--backend", "openvino", "--threads", "1", "--tile", "0"]) == 0
    out = cv2.imread(str(tmp_path / "out.png"))
    assert out.shape == (40, 48, 3)
    assert main([*argv[:4], str(tmp_path / "ort.png"), *argv[5:], "--tile", "0"]) == 0
    assert psnr(cv2.imread(str(tmp_path / "ort.png")) / 255.0, out / 255.0) >= 45  # 8-bit rounding only


@needs_openvino
def test_eval_runs_an_export_on_openvino(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lightbsr eval --backend openvino` scores an export as ONNX Runtime does (FP32), and BF16 close to it."""
    with single_torch_thread():
        path = export_onnx(tiny_lightbsr(), tmp_path / "tiny.onnx", arch=ARCH, graphs=(contract.GRAPH_FULL,))
    images = ROOT / "tests" / "data" / "images"
    from lightbsr.runtime import openvino_backend

    bf16 = openvino_backend.cpu_has_bf16(openvino_backend.ov.Core())
    scores = {}
    runs = [[], ["--backend", "openvino"]] + ([["--backend", "openvino", "--bf16"]] if bf16 else [])
    for extra in runs:
        argv = ["eval", str(path), "--dataset", str(images), "--sigma", "2.4", "--json", "--no-progress"]
        assert main([*argv, *extra]) == 0
        document = json.loads(capsys.readouterr().out)
        scores[" ".join(extra)] = document["datasets"][0]["mean"]["2.4"]["psnr"]
    assert abs(scores["--backend openvino"] - scores[""]) < 0.01
    assert not bf16 or abs(scores["--backend openvino --bf16"] - scores[""]) < 0.5  # no BF16 CPU: no BF16 row


@needs_openvino
def test_openvino_runs_without_torch(exported: dict[str, Path]) -> None:
    code = f"""
import sys
sys.modules["torch"] = None
import numpy as np
from lightbsr.runtime import Upscaler
up = Upscaler({str(exported["onnx"])!r}, backend="openvino", tile=8, tile_overlap=4)
out = up.upscale_lr(np.random.default_rng(0).random((3, 12, 10), dtype=np.float32))
assert out.shape == (3, 48, 40) and sys.modules["torch"] is None
print(up.backend.name, up.last_run.tiles)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["openvino", "4"]


@needs_openvino
def test_signals_after_backends_are_freed_in_the_order_they_were_made(exported: dict[str, Path]) -> None:
    """OpenVINO's CPU plugin (2026.4, AMX CPUs) swaps the thread's signal stack per compiled model, and restores it
    LIFO: freeing two backends first-in-first-out left the thread on a freed stack, and the next SIGTERM or Ctrl-C
    was a segmentation fault (seen in CI). The backend keeps the thread's signal stack as it was."""
    code = f"""
import ctypes, gc, os, signal
from lightbsr.runtime import Upscaler
from lightbsr.runtime.openvino_backend import _StackT
def stack():
    now = _StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(now)) == 0
    return now.ss_sp, now.ss_flags
before = stack()
first = Upscaler({str(exported["onnx"])!r}, backend="openvino")
second = Upscaler({str(exported["onnx"])!r}, backend="openvino", split=False)
assert stack() == before, (stack(), before)
del first
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGTERM, lambda signum, frame: print("handled"))
os.kill(os.getpid(), signal.SIGTERM)
print("alive")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split() == ["handled", "alive"]


def test_without_openvino_the_backend_is_a_clear_error(exported: dict[str, Path]) -> None:
    code = f"""
import sys
sys.modules["openvino"] = None
from lightbsr.errors import BackendUnavailableError
from lightbsr.runtime import Upscaler
try:
    Upscaler({str(exported["onnx"])!r}, backend="openvino")
except BackendUnavailableError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "the openvino backend needs the Python package 'openvino'" in result.stdout

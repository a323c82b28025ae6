"""``lightbsr serve`` against a real Triton Inference Server (nvidia-pytriton's), on loopback only.

The server side needs the ``[serve]`` extra, which pins numpy<2 (docs/deploy.md), so it usually lives in an
environment of its own: the tests start ``lightbsr serve`` with the Python of this environment when it has
nvidia-pytriton, else ``$LIGHTBSR_SERVE_PYTHON``, else ``.venv-serve/bin/python`` at the repository root
(what ``.ci/run`` makes), and skip with that reason when there is none. The clients (tritonclient, the
``[dev]`` extra) and the local :class:`~lightbsr.runtime.Upscaler` they are compared with run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightbsr import contract
from lightbsr.benchmarks.consistency import psnr
from lightbsr.cli import main
from lightbsr.errors import ConfigError
from lightbsr.hardware import available_cpus
from lightbsr.runtime import Upscaler
from lightbsr.runtime.serve import ServerOptions, _children, server_command, server_environment
from lightbsr.runtime.triton_model import DEFAULT_MAX_PIXELS, RequestOptions, ServeSettings, request_options

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "images"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
MAX_PIXELS = 250_000  # the test server's --max-pixels: 600×400 passes, 600×420 does not
SERVER_TILE = 256


# --------------------------------------------------------------------------- without a server


def test_request_options() -> None:
    assert request_options({}) == RequestOptions()
    assert request_options({"tile": 64, "tile_overlap": "8", "precision": "fp16"}) == RequestOptions(64, 8, "fp16")
    for parameters, message in (
        ({"tiel": 64}, "unknown request parameter"),
        ({"tile": -1}, "tile must be an integer ≥ 0"),
        ({"tile": "big"}, "tile must be an integer"),
        ({"tile": True}, "tile must be an integer"),
        ({"tile_overlap": 1.5}, "tile_overlap must be an integer"),
        ({"precision": "int4"}, "unknown precision"),
    ):
        with pytest.raises(ConfigError, match=message):
            request_options(parameters)


def test_serve_settings_round_trip() -> None:
    settings = ServeSettings(model="m.onnx", tile=128, threads=2)
    parameters = settings.to_parameters()
    assert parameters == {"backend": "auto", "tile": "128", "max_pixels": str(DEFAULT_MAX_PIXELS), "threads": "2"}
    assert ServeSettings.from_parameters({**parameters, contract.TRITON_MODEL_PARAMETER: "m.onnx"}) == settings
    with pytest.raises(ConfigError, match="unknown lightbsr model parameter"):
        ServeSettings.from_parameters({"model": "m.onnx", "tiles": "3"})
    with pytest.raises(ConfigError, match="no 'model' parameter"):
        ServeSettings.from_parameters({"tile": "3"})
    with pytest.raises(ConfigError, match="max_pixels must be an integer ≥ 1"):
        ServeSettings.from_parameters({"model": "m.onnx", "max_pixels": "0"})


def test_server_command_listens_where_told(tmp_path: Path) -> None:
    from lightbsr.runtime.serve import TritonInstall

    install = TritonInstall(*(tmp_path / name for name in ("tritonserver", "libs", "backends", "caches", "stub")))
    command = server_command(install, tmp_path / "repo", tmp_path / "b", ServerOptions(http_port=1, grpc_port=2), "m")
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in command
    assert "--load-model=m" in command and "--model-control-mode=explicit" in command
    env = server_environment(install, {"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.exec_prefix) / "bin"), "/usr/bin"]  # the stub's Python
    assert env["LD_LIBRARY_PATH"] == str(tmp_path / "libs")
    assert ServerOptions(address="0.0.0.0").endpoints()["grpc"] == "127.0.0.1:8001"
    with pytest.raises(ConfigError, match="must differ"):
        ServerOptions(http_port=9000, grpc_port=9000).check()


def test_cli_refuses_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "-m", str(tmp_path / "missing.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["serve", "-m", str(tmp_path / "model.txt")]) == 2
    assert "unknown model file type" in capsys.readouterr().err
    assert main(["serve", "-m", str(tmp_path / "m.onnx"), "--http-port", "9000", "--grpc-port", "9000"]) == 2
    assert "must differ" in capsys.readouterr().err
    assert main(["serve", "-m", str(tmp_path / "m.onnx"), "--instances", "0"]) == 2
    assert "argument --instances: must be ≥ 1, got 0" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="nvidia-pytriton is installed here")
def test_cli_without_the_serve_extra(tiny_export: tuple[Path, object], capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, _ = tiny_export
    assert main(["serve", "-m", str(onnx_path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lightbsr: error: ") and "needs nvidia-pytriton" in last and "lightbsr[serve]" in last


def test_load_test_sends_to_loopback_only() -> None:
    from lightbsr.benchmarks.serve_load import check_loopback, load_images

    for target in ("127.0.0.1:8001", "127.3.4.5:1", "localhost:8001", "[::1]:8001"):
        check_loopback(target)
    for target in ("10.0.0.2:8001", "192.168.1.1:8001", "8.8.8.8:53", "example.com:8001", "[2001:db8::1]:1"):
        with pytest.raises(ConfigError, match="loopback addresses only"):
            check_loopback(target)
    crops = load_images(ROOT / "examples" / "baby_lr.png", 64, 9)
    assert [c.shape for c in crops] == [(64, 64, 3)] * 9 and crops[0].dtype == np.uint8
    assert len({c.tobytes() for c in crops}) == 9


# --------------------------------------------------------------------------- a real server


def serve_python() -> str | None:
    """The Python that runs the server side (see the module docstring), or None."""
    if importlib.util.find_spec("pytriton") is not None:
        return sys.executable
    if os.environ.get("LIGHTBSR_SERVE_PYTHON"):
        return os.environ["LIGHTBSR_SERVE_PYTHON"]
    candidate = ROOT / ".venv-serve" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class Server:
    process: subprocess.Popen[str]
    endpoints: dict[str, str]
    stderr: Path
    log: Path

    def grpc(self):  # -> tritonclient.grpc.InferenceServerClient
        import tritonclient.grpc

        return tritonclient.grpc.InferenceServerClient(self.endpoints["grpc"])

    def http(self):  # -> tritonclient.http.InferenceServerClient
        import tritonclient.http

        return tritonclient.http.InferenceServerClient(self.endpoints["http"])

    def stubs(self) -> list[int]:
        """The model instances' processes (children of tritonserver, the child of `lightbsr serve`)."""
        (triton,) = _children(self.process.pid)
        return _children(triton)

    def messages(self) -> str:
        return self.stderr.read_text()


def start_server(model: Path, folder: Path, *options: str, timeout: float = 300) -> Server:
    python = serve_python()
    if python is None:
        pytest.skip(
            "needs the [serve] extra (nvidia-pytriton, numpy<2): pip install -e '.[serve]' here, in .venv-serve "
            "(as .ci/run does), or name its Python in LIGHTBSR_SERVE_PYTHON"
        )
    http, grpc, metrics = free_ports(3)
    stderr, log = folder / "serve.err", folder / "tritonserver.log"
    command = [python, "-m", "lightbsr", "serve", "-m", str(model), "--json", "--device", "cpu", "--log", str(log)]
    command += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *options]
    with stderr.open("w") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=folder)
    assert process.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line or not line[0].strip():
        process.kill()
        process.wait()
        pytest.fail(f"lightbsr serve did not get ready: {stderr.read_text()[-2000:]}")
    endpoints = json.loads(line[0])
    assert endpoints["http"] == f"127.0.0.1:{http}" and endpoints["grpc"] == f"127.0.0.1:{grpc}"
    return Server(process, endpoints, stderr, log)


def stop_server(server: Server, timeout: float = 120) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise


@pytest.fixture(scope="module")
def server(tiny_export: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    onnx_path, _ = tiny_export
    running = start_server(
        onnx_path, tmp_path_factory.mktemp("serve"), "--tile", str(SERVER_TILE), "--max-pixels", str(MAX_PIXELS)
    )
    yield running
    assert stop_server(running) == 0, running.messages()


@pytest.fixture(scope="module")
def local(tiny_export: tuple[Path, object]) -> Upscaler:
    return Upscaler(tiny_export[0], tile=SERVER_TILE, threads=available_cpus())  # as the server's one CPU instance


def image(height: int, width: int, channels: int = 3) -> np.ndarray:
    """A real photo's content at the size asked (RGB, or gray / RGBA built from it)."""
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "baby_crop.png")), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    if channels == 1:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 4:
        alpha = np.linspace(0, 255, height * width).reshape(height, width, 1).astype(np.uint8)
        return np.dstack([rgb, alpha])
    return rgb


def infer_grpc(server: Server, batch: np.ndarray, timeout: float = 300, **parameters: object) -> np.ndarray:
    import tritonclient.grpc

    inp = tritonclient.grpc.InferInput(contract.TRITON_IMAGE_INPUT, list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    result = server.grpc().infer("lightbsr", [inp], parameters=parameters or None, client_timeout=timeout)
    return result.as_numpy(contract.TRITON_IMAGE_OUTPUT)


def infer_http(server: Server, batch: np.ndarray, **parameters: object) -> np.ndarray:
    import tritonclient.http

    inp = tritonclient.http.InferInput(contract.TRITON_IMAGE_INPUT, list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=True)
    result = server.http().infer("lightbsr", [inp], parameters=parameters or None, timeout=300)
    return result.as_numpy(contract.TRITON_IMAGE_OUTPUT)


def expect_same(served: np.ndarray, reference: np.ndarray) -> None:
    assert served.shape == reference.shape and served.dtype == np.uint8
    assert psnr(served, reference, peak=255) >= 60


def test_health_and_metrics(server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/lightbsr/ready"):
        with DIRECT.open(f"http://{server.endpoints['http']}{path}", timeout=10) as response:
            assert response.status == 200, path
    client = server.grpc()
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lightbsr")
    config = client.get_model_config("lightbsr", as_json=True)["config"]
    assert (config["backend"], config["max_batch_size"]) == ("python", 4)
    infer_grpc(server, image(16, 16)[None])
    with DIRECT.open(server.endpoints["metrics"], timeout=10) as response:
        metrics = response.read().decode()
    for name in (  # the ones docs/deploy.md names
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ):
        assert re.search(rf'^{name}{{[^}}]*model="lightbsr"', metrics, re.MULTILINE), name


def test_http_and_grpc_equal_the_local_upscaler(server: Server, local: Upscaler) -> None:
    rgb = image(48, 40)
    reference = local.upscale(rgb)
    expect_same(infer_grpc(server, rgb[None])[0], reference)
    expect_same(infer_http(server, rgb[None])[0], reference)
    # Request parameters override the server's settings.
    expect_same(infer_http(server, rgb[None], tile=16)[0], Upscaler(local.backend, tile=16).upscale(rgb))
    # A batch of two images in one request, and gray / RGBA: the layouts `lightbsr upscale` takes.
    other = image(48, 40)[::-1].copy()
    expect_same(infer_grpc(server, np.stack([rgb, other]))[1], local.upscale(other))
    for channels in (1, 4):
        picture = image(32, 36, channels)
        served = infer_grpc(server, picture[None])[0]
        reference = local.upscale(picture)
        expect_same(served, reference.reshape(served.shape))


def test_the_example_client(server: Server, local: Upscaler, tmp_path: Path) -> None:
    """examples/triton_client.py, the README's second terminal, against the server."""
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), cv2.cvtColor(image(40, 52), cv2.COLOR_RGB2BGR))
    client = ROOT / "examples" / "triton_client.py"
    done = subprocess.run(
        [sys.executable, str(client), str(source), str(tmp_path / "out.png"), server.endpoints["grpc"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    served = cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)
    expect_same(served, local.upscale(image(40, 52)))  # its tile=256 request parameter is the fixture's tile


@pytest.mark.slow
def test_a_large_image_is_served_through_tiles(server: Server, tiny_export: tuple[Path, object]) -> None:
    picture = image(400, 600)
    tiled = Upscaler(tiny_export[0], tile=SERVER_TILE, threads=available_cpus()).upscale(picture)
    whole = Upscaler(tiny_export[0], tile=0, threads=available_cpus()).upscale(picture)
    assert not np.array_equal(tiled, whole)  # blend tiles approximate the whole image: tiling leaves a trace
    served = infer_grpc(server, picture[None])[0]
    assert served.shape == (1600, 2400, 3)
    expect_same(served, tiled)  # the server's --tile, with the shared estimate ...
    # ... bit for bit: same graphs, same threads (the server's one CPU instance takes them all), same tiles.
    assert np.array_equal(served, tiled)


def test_malformed_requests_get_a_clear_error(server: Server) -> None:
    import tritonclient.grpc
    from tritonclient.utils import InferenceServerException

    def request(array: np.ndarray, datatype: str = "UINT8", **parameters: object) -> str:
        inp = tritonclient.grpc.InferInput(contract.TRITON_IMAGE_INPUT, list(array.shape), datatype)
        inp.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as caught:
            server.grpc().infer("lightbsr", [inp], parameters=parameters or None, client_timeout=300)
        return str(caught.value)

    valid = image(12, 10)[None]
    cases = {
        "wrong dtype": (request(valid.astype(np.float32), "FP32"), "expects 'UINT8'"),
        "2-D array": (request(valid[0, :1, :, 0]), "unexpected shape for input 'image'"),
        "2-D image": (request(image(40, 30)[:, :, 0]), "batch-size must be <= 4"),  # its rows read as a batch
        "0-pixel image": (request(np.zeros((1, 0, 0, 3), np.uint8)), "empty image"),
        "5 channels": (request(np.zeros((1, 4, 4, 5), np.uint8)), "expected (H, W[, 2|3|4])"),
        "too many pixels": (request(image(420, 600)[None]), f"takes at most {MAX_PIXELS}"),
        "unknown parameter": (request(valid, tiel=4), "unknown request parameter(s) tiel"),
        "bad precision": (request(valid, precision="int4"), "unknown precision 'int4'"),
        "precision the model cannot run": (request(valid, precision="bf16"), "does not run bf16"),
        "overlap not below the tile": (request(valid, tile=8, tile_overlap=8), "must be smaller than the tile"),
    }
    with pytest.raises(InferenceServerException) as caught:
        server.grpc().infer("lightbsr", [], client_timeout=60)
    cases["missing input"] = (str(caught.value), "missing required input(s) ['image']")
    # 20000×20000 declared, a few bytes sent: refused by Triton before it reaches the model.
    declared = tritonclient.grpc.InferInput(contract.TRITON_IMAGE_INPUT, [1, 20000, 20000, 3], "UINT8")
    declared._raw_content = b"abc"  # what set_data_from_numpy fills in, without its shape check
    with pytest.raises(InferenceServerException) as caught:
        server.grpc().infer("lightbsr", [declared], client_timeout=60)
    cases["20000×20000 declared"] = (str(caught.value), "input byte size mismatch for input 'image'")
    for name, (message, expected) in cases.items():
        assert expected in message, f"{name}: {message}"
        assert "StatusCode.INVALID_ARGUMENT" in message, f"{name}: {message}"  # the client's fault, not the server's
        assert len(message) < 600 and "Traceback" not in message, f"{name}: {message}"
    assert infer_grpc(server, valid).shape == (1, 48, 40, 3)  # and the server still serves


def test_a_model_that_cannot_load_is_one_line(tmp_path: Path) -> None:
    """The server's own reason (a model.py that raised while loading), then exit 2; nothing left running."""
    if serve_python() is None:
        pytest.skip("needs the [serve] extra (see start_server)")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    done = subprocess.run(
        [serve_python(), "-m", "lightbsr", "serve", "-m", str(broken), "--device", "cpu"]
        + [f"--{kind}-port={port}" for kind, port in zip(("http", "grpc", "metrics"), free_ports(3), strict=True)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lightbsr: error: the Triton server exited with status 1: ")
    assert "broken.onnx: not a loadable ONNX model" in last


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sigterm_finishes_the_request_in_flight(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    onnx_path, _ = tiny_export
    running = start_server(onnx_path, tmp_path, "--exit-timeout", "300")
    try:
        (stub,) = running.stubs()
        idle = cpu_seconds(stub)
        picture = image(256, 256)  # seconds of work here
        result: dict[str, object] = {}

        def send() -> None:
            try:
                result["sr"] = infer_grpc(running, picture[None])[0]
            except Exception as err:  # reported by the assertion below
                result["error"] = err

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 60
        while cpu_seconds(stub) < idle + 0.2:  # the instance is working on the request
            assert time.monotonic() < deadline and sender.is_alive(), result
            time.sleep(0.02)
        running.process.send_signal(signal.SIGTERM)
        assert sender.is_alive(), "the request finished before the signal: the test would prove nothing"
        sender.join(300)
        assert "error" not in result, result.get("error")
        assert result["sr"].shape == (1024, 1024, 3)  # type: ignore[union-attr]
        assert running.process.wait(120) == 0, running.messages()
        assert "finished its requests and stopped" in running.messages()
    finally:
        stop_server(running)


def test_a_killed_instance_does_not_take_the_server_down(tiny_export: tuple[Path, object], tmp_path: Path) -> None:
    onnx_path, _ = tiny_export
    running = start_server(onnx_path, tmp_path, "--instances", "2", "--exit-timeout", "3")
    try:
        picture = image(16, 16)[None]
        first = running.stubs()
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        client = running.grpc()
        deadline, streak = time.monotonic() + 180, 0
        while streak < 4:  # requests routed to the dead instance fail until `lightbsr serve` reloads the model
            assert time.monotonic() < deadline, running.messages()
            assert client.is_server_live()
            try:
                infer_grpc(running, picture, timeout=30)
                streak += 1
            except Exception:
                streak = 0
                time.sleep(0.5)
        assert "an instance of model 'lightbsr' died; reloading the model" in running.messages()
        assert all(infer_grpc(running, picture).shape == (1, 64, 64, 3) for _ in range(4))
        # Triton 2.51 cannot unload the old instances (one of them never answers): the stop waits for the
        # exit timeout and is reported as not clean.
        assert stop_server(running) == 2
        assert "instance(s) died, Triton cannot unload their model" in running.messages()
    finally:
        stop_server(running)

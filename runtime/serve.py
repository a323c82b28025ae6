"""``lightbsr serve``: one model on a real Triton Inference Server, the one nvidia-pytriton ships.

The ``nvidia-pytriton`` wheel (the ``[serve]`` extra) carries the ``tritonserver`` binary, its libraries
and the python backend with a stub per Python version. :func:`serve` writes a model repository with
the python-backend model of :mod:`lightbsr.triton` (which runs :class:`~lightbsr.runtime.Upscaler`
through :mod:`lightbsr.runtime.triton_model`) into a temporary folder, starts ``tritonserver`` on it,
waits until it is ready, and serves until SIGINT or SIGTERM; it then passes SIGTERM on to the server,
which stops taking requests, finishes those in flight (for up to ``exit_timeout`` seconds) and exits.

The python backend runs ``model.py`` in a stub process that embeds this Python: the stub finds this
environment (lightbsr, numpy, onnxruntime) through ``PATH``, as PyTriton arranges it. nvidia-pytriton 0.7
pins ``numpy<2``, and its stub does need it: with numpy 2 the stub sends empty or corrupted output tensors
(tried with numpy 2.4), so the server side lives in an environment of its own (docs/deploy.md).
Everything here binds to ``address`` (default 127.0.0.1, loopback only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from lightbsr.errors import BackendUnavailableError, ConfigError, LightBSRError, LightBSRWarning, ModelFileError

__all__ = ["SERVE_HINT", "ServeError", "ServerOptions", "TritonInstall", "TritonServer", "find_triton", "serve"]

SERVE_HINT = (
    "install it with pip install 'lightbsr[serve]' in an environment of its own "
    "(nvidia-pytriton pins numpy<2; see docs/deploy.md)"
)
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
"""``--device`` → the instance_group kind (auto: GPU instances where Triton sees GPUs, else CPU)."""
_ERROR_LINE = re.compile(r"^E\d{4} ")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""HTTP without proxies: the health checks go to this machine only."""


class ServeError(LightBSRError):
    """The Triton server could not start, or did not stop cleanly."""


@dataclass(frozen=True)
class TritonInstall:
    """Where nvidia-pytriton keeps the Triton server."""

    server: Path
    """The ``tritonserver`` binary."""
    libs: Path
    """Its shared libraries (``LD_LIBRARY_PATH``)."""
    backends: Path
    caches: Path
    stub: Path
    """The python-backend stub built for this Python version."""


def find_triton() -> TritonInstall:
    """The Triton server of the installed nvidia-pytriton; BackendUnavailableError when there is none."""
    try:
        from pytriton.utils import distribution  # type: ignore[import-not-found]
    except ImportError as err:
        raise BackendUnavailableError(f"lightbsr serve needs nvidia-pytriton's Triton server: {SERVE_HINT}") from err
    root = Path(distribution.get_root_module_path()) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        server=root / "bin" / "tritonserver",
        libs=Path(distribution.get_libs_path()),
        backends=root / "backends",
        caches=root / "caches",
        stub=Path(distribution.get_stub_path(version)),
    )
    if not install.server.is_file():
        raise BackendUnavailableError(f"{install.server}: nvidia-pytriton's tritonserver binary is missing")
    if not install.stub.is_file():
        raise BackendUnavailableError(f"nvidia-pytriton has no python-backend stub for Python {version}")
    return install


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens, and how long it may take to drain."""

    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout: int = 30
    """Seconds the server waits for requests in flight when told to stop."""

    def check(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        for port in ports:
            if not 1 <= port <= 65535:
                raise ConfigError(f"port {port} is not a TCP port (1–65535)")
        if len(set(ports)) != 3:
            raise ConfigError(f"the HTTP, gRPC and metrics ports must differ, got {', '.join(map(str, ports))}")
        if self.exit_timeout < 0:
            raise ConfigError(f"the exit timeout must be ≥ 0 s, got {self.exit_timeout}")

    @property
    def host(self) -> str:
        """The address clients on this machine use (the loopback address when listening on every address)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.address, self.address)

    def endpoints(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "http": f"{host}:{self.http_port}",
            "grpc": f"{host}:{self.grpc_port}",
            "metrics": f"http://{host}:{self.metrics_port}/metrics",
        }


def server_command(
    install: TritonInstall, repository: Path, backends: Path, options: ServerOptions, model: str
) -> list[str]:
    """The ``tritonserver`` command line (pure): ``model`` loaded explicitly, so that it can be reloaded."""
    return [
        str(install.server),
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--load-model={model}",
        f"--backend-directory={backends}",
        f"--cache-directory={install.caches}",
        f"--http-address={options.address}",
        f"--grpc-address={options.address}",
        f"--metrics-address={options.address}",
        f"--http-port={options.http_port}",
        f"--grpc-port={options.grpc_port}",
        f"--metrics-port={options.metrics_port}",
        f"--exit-timeout-secs={options.exit_timeout}",
        "--disable-auto-complete-config",
        "--log-verbose=0",
    ]


def server_environment(install: TritonInstall, environ: dict[str, str]) -> dict[str, str]:
    """The server's environment: its libraries on ``LD_LIBRARY_PATH``, this Python first on ``PATH`` (for the stub)."""
    env = dict(environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (env.get("LD_LIBRARY_PATH"), str(install.libs)) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.exec_prefix) / "bin"), env.get("PATH")) if p)
    return env


class TritonServer:
    """A running ``tritonserver`` for one repository (a context manager that always stops it)."""

    def __init__(
        self,
        install: TritonInstall,
        repository: Path,
        workspace: Path,
        options: ServerOptions,
        model: str,
        *,
        log: Path | None = None,
    ) -> None:
        self.options = options
        self.model = model
        self.reloads = 0
        """How many times the model was reloaded after an instance died."""
        self.log_path = log or workspace / "tritonserver.log"
        backends = workspace / "backends"
        python = backends / "python"
        python.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(install.backends / "python" / name, python / name)
        shutil.copy2(install.stub, python / "triton_python_backend_stub")
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            server_command(install, repository, backends, options, model),
            env=server_environment(install, dict(os.environ)),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches `lightbsr serve`, which stops the server once
            preexec_fn=_die_with_parent,
        )

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait_ready(self, timeout: float) -> None:
        """Return once the server and its models are ready; ServeError if it exits or times out first."""
        url = f"http://{self.options.endpoints()['http']}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServeError(f"the Triton server exited with status {self.process.returncode}: {self.errors()}")
            with contextlib.suppress(OSError), _DIRECT.open(url, timeout=1) as response:
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise ServeError(f"the Triton server was not ready after {timeout:.0f} s: {self.errors()}")
            time.sleep(0.25)

    def stubs(self) -> list[int]:
        """Process ids of the model's instances (the python-backend stubs the server started; Linux)."""
        return [pid for pid in _children(self.process.pid) if _command(pid).endswith("triton_python_backend_stub")]

    def reload(self) -> None:
        """Load the model again (Triton replaces its instances, finishing the requests of the old ones)."""
        url = f"http://{self.options.endpoints()['http']}/v2/repository/models/{self.model}/load"
        try:
            with _DIRECT.open(urllib.request.Request(url, data=b"", method="POST"), timeout=600):
                pass
        except OSError as err:
            raise ServeError(f"could not reload model {self.model!r}: {err}") from err

    def stop(self) -> None:
        """Ask the server to finish the requests in flight and exit (SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Stop the server (killing it if it outlives its exit timeout) and close the log."""
        if self.process.poll() is None:
            self.stop()
            try:
                self.process.wait(self.options.exit_timeout + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()

    def errors(self) -> str:
        """The server's error lines (or its last line), for a one-line message."""
        self._log_file.flush()
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        return " | ".join(errors[-2:]) if errors else (lines[-1] if lines else "no output")


def serve(
    model: str | os.PathLike[str],
    *,
    name: str = "lightbsr",
    options: ServerOptions | None = None,
    instances: int = 1,
    device: str = "auto",
    max_batch_size: int = 4,
    settings: dict[str, str] | None = None,
    startup_timeout: float = 120.0,
    log: Path | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> int:
    """Serve ``model`` until SIGINT/SIGTERM; return 0 once the server drained and exited cleanly.

    ``settings`` are the python-backend model's further parameters
    (:meth:`lightbsr.runtime.triton_model.ServeSettings.to_parameters`); ``on_start`` is called once the
    options, the model file and the Triton install were checked, as the server starts; ``on_ready`` gets
    the endpoints; ``log`` keeps the server's log (default: a temporary file).

    Raises:
        ModelFileError: no such model file. ConfigError: bad options. BackendUnavailableError: no
            nvidia-pytriton. ServeError: the server did not start (a model that cannot be loaded, a port in
            use: the server's first error lines say which), died, or did not stop cleanly.
    """
    from lightbsr.runtime.backend import choose_backend
    from lightbsr.triton import write_python_model

    options = options or ServerOptions()
    options.check()
    if device not in KINDS:
        raise ConfigError(f"unknown device {device!r}; choose from {', '.join(KINDS)}")
    path = Path(model)
    choose_backend("auto", path)  # an unknown kind of file is refused before anything starts
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    install = find_triton()
    if on_start is not None:
        on_start()
    with _workspace() as workspace:
        write_python_model(
            path,
            workspace / "models",
            name=name,
            copy=False,
            max_batch_size=max_batch_size,
            instances=instances,
            kind=KINDS[device],
            parameters=settings,
        )
        with (
            TritonServer(install, workspace / "models", workspace, options, name, log=log) as server,
            _stop_on_signals(server) as stopping,
        ):
            serving: set[int] = set()
            try:
                server.wait_ready(startup_timeout)
            except ServeError:
                if not stopping:
                    raise
            else:
                serving = set(server.stubs())  # before clients are told: an instance may die right after
                if on_ready is not None:
                    on_ready(options.endpoints())
            code = _watch(server, stopping, serving)
            if not stopping:
                raise ServeError(f"the Triton server exited with status {code}: {server.errors()}")
            if code != 0:
                cause = (
                    f" (after {server.reloads} instance(s) died, Triton cannot unload their model and waits for its "
                    "exit timeout)"
                    if server.reloads
                    else ""
                )
                raise ServeError(f"the Triton server stopped with status {code}{cause}: {server.errors()}")
    return 0


def _watch(server: TritonServer, stopping: list[int], serving: set[int], interval: float = 1.0) -> int:
    """Wait for the server to exit; meanwhile reload the model when one of its instances dies.

    Triton's python backend (nvidia-pytriton 0.7, Triton 2.51) does not restart a stub process that died
    (killed, out of memory): the server stays up and the other instances serve, but every request routed
    to the dead one fails, and the dead instance keeps the server from stopping until its exit timeout.
    Reloading the model replaces the instances; the old ones cannot be unloaded (the dead stub never
    answers), so the server then waits for its exit timeout when it stops. ``serving``: the instances' process
    ids when the server got ready.
    """
    while True:
        try:
            return server.process.wait(interval)
        except subprocess.TimeoutExpired:
            pass
        current = set(server.stubs())
        if stopping or serving <= current:
            continue
        warnings.warn(f"an instance of model {server.model!r} died; reloading the model", LightBSRWarning, stacklevel=2)
        server.reloads += 1
        try:
            server.reload()
        except ServeError as err:
            if not stopping and server.process.poll() is None:
                warnings.warn(str(err), LightBSRWarning, stacklevel=2)
        serving = (set(server.stubs()) - current) or set(server.stubs())  # the new instances (the old linger)


def _children(pid: int) -> list[int]:
    """Ids of the processes whose parent is ``pid`` (from /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _command(pid: int) -> str:
    """The executable a process runs (its first command-line word), or "" when it is gone."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lightbsr-serve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _stop_on_signals(server: TritonServer) -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM stop the server (once); the list yielded gets the signals received."""
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not received:
            server.stop()
        received.append(signum)

    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `lightbsr serve` dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)

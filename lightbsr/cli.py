"""The ``lightbsr`` command: one entry point, a subcommand per pipeline step.

Each stage contributes its subcommands through ``lightbsr.<stage>.cli.register``;
those modules import only argparse at import time, so ``lightbsr --help`` and
``lightbsr upscale`` stay fast and do not need torch unless the chosen backend does.
Expected failures (:class:`~lightbsr.errors.LightBSRError`, bad files) become one
line on stderr and exit status 2; set ``LIGHTBSR_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from lightbsr._version import __version__
from lightbsr.argparsing import HelpFormatter, Parser, add_command
from lightbsr.errors import LightBSRError, LightBSRWarning, one_line

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)
STAGE_CLIS = (
    "lightbsr.runtime.cli",
    "lightbsr.export.cli",
    "lightbsr.export.build_cli",
    "lightbsr.training.cli",
    "lightbsr.benchmarks.cli",
)

DESCRIPTION = """\
lightbsr: deploy lightweight ×4 blind super-resolution (LightBSR, KDSR).

Pipeline: train → convert/export (ONNX) → quantize (FP16/INT8) → build (TensorRT) → upscale,
with eval and bench to decide what to ship. Run `lightbsr COMMAND --help` for each step."""


def _register_convert(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "convert",
        "authors'-layout checkpoint → lightbsr checkpoint",
        "Convert a checkpoint in the authors' layout (.pt/.pth read with torch.load(weights_only=True), or "
        ".safetensors) into a lightbsr checkpoint: safetensors with the model config in its header. "
        "Conversion is strict: unknown or missing keys are an error that names them.",
    )
    p.add_argument("checkpoint", help="authors'-layout checkpoint (.pt, .pth or .safetensors)")
    p.add_argument("-o", "--output", required=True, help="output lightbsr checkpoint (.safetensors)")
    p.add_argument("--arch", help="expected architecture, e.g. lightbsr_student_x4 (default: detected from the keys)")
    p.add_argument("--setting", type=int, choices=(1, 2), help="degradation setting the student was trained for")
    p.add_argument(
        "--pca",
        metavar="PCA_matrix.mat",
        help="LightBSR teachers: the PCA basis the authors' run saved beside the checkpoint (MATLAB file, key p, "
        "441×15); required for a teacher, whose degradation prior is computed on it",
    )
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from lightbsr.checkpoint import convert_reference_file
    from lightbsr.errors import ConfigError
    from lightbsr.files import check_outputs

    if not str(args.output).endswith(".safetensors"):
        raise ConfigError(f"{args.output}: the output must be a .safetensors file")
    check_outputs([args.checkpoint, *([args.pca] if args.pca else [])], [args.output])
    config = convert_reference_file(args.checkpoint, args.output, args.arch, setting=args.setting, pca=args.pca)
    print(f"wrote {args.output} ({config.arch})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lightbsr", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"lightbsr {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _register_convert(subparsers)
    for module_name in STAGE_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lightbsr`` command; expected failures are one line on stderr and exit status 2."""
    _tolerant_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a usage error (one line, printed by the parser); --help and --version exit 0
        if not done.code:
            raise
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = bool(os.environ.get("LIGHTBSR_DEBUG"))
    try:
        with _terminate_as_interrupt(), _one_line_warnings(debug):
            return int(args.func(args) or 0)
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except (LightBSRError, OSError, MemoryError) as err:
        if debug:
            raise
        message = f"out of memory ({one_line(err)})" if isinstance(err, MemoryError) else one_line(err)
        print(f"lightbsr: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("lightbsr: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("lightbsr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``), raised like Ctrl-C so that every cleanup runs the same way."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while a command runs (SIGINT already interrupts)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings(debug: bool) -> Iterator[None]:
    """lightbsr's own warnings as one ``lightbsr: warning:`` line each (above any progress bar); others hidden.

    Third-party warnings (torch, onnx, ...) are not the user's to act on; ``LIGHTBSR_DEBUG=1`` shows them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
            if issubclass(category, LightBSRWarning):
                from tqdm import tqdm

                tqdm.write(f"lightbsr: warning: {' '.join(str(message).split())}", file=sys.stderr)
            elif debug:
                original(message, category, *rest, **kwargs)

        warnings.showwarning = show
        yield


def _tolerant_streams() -> None:
    """Characters the terminal's encoding lacks (×, →, σ under an ASCII locale) are escaped, not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _discard_stdout() -> None:
    """After the reader of stdout left: send what is still buffered nowhere, so exiting prints no traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

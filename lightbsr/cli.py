"""The ``lightbsr`` command: one entry point, a subcommand per pipeline step.

Each stage contributes its subcommands through ``lightbsr.<stage>.cli.register``;
those modules import only argparse at import time, so ``lightbsr --help`` and
``lightbsr upscale`` stay fast and do not need torch unless the chosen backend does.
Expected failures (:class:`~lightbsr.errors.LightBSRError`, bad files) become one
line on stderr and exit status 2; set ``LIGHTBSR_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lightbsr._version import __version__
from lightbsr.argparsing import HelpFormatter, add_command
from lightbsr.errors import LightBSRError, one_line

EXIT_USAGE = 2
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
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from lightbsr.checkpoint import convert_reference_file

    if not str(args.output).endswith(".safetensors"):
        raise LightBSRError(f"{args.output}: the output must be a .safetensors file")
    config = convert_reference_file(args.checkpoint, args.output, args.arch, setting=args.setting)
    print(f"wrote {args.output} ({config.arch})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightbsr", description=DESCRIPTION, formatter_class=HelpFormatter)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (LightBSRError, OSError) as err:
        if os.environ.get("LIGHTBSR_DEBUG"):
            raise
        print(f"lightbsr: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lightbsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

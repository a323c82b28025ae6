"""The argparse helpers every ``lightbsr`` subcommand uses (standard library only).

The core CLI (:mod:`lightbsr.cli`) imports the stage CLIs, and the stage CLIs need the house
formatter: both import it from here, so neither imports the other.

Numeric options are parsed by the types below, the one way every command validates them: an
integer option is an integer within its bounds (``--threads -2``, ``--limit -1`` are refused),
a float option is finite and within its bounds (``nan``, ``inf``, ``1e-30`` where a width is
asked are refused). A bad value is one line and exit status 2 (:class:`Parser`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

__all__ = ["HelpFormatter", "Parser", "add_command", "float_range", "int_range"]

EXIT_USAGE = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written, defaults shown."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (and exit status 2), like every lightbsr error."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        command = self.prog.partition(" ")[2]
        self.exit(EXIT_USAGE, f"lightbsr: error: {command + ': ' if command else ''}{text} (see {self.prog} --help)\n")


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Create a subcommand parser with the house formatter (defaults shown, description kept as written)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=HelpFormatter
    )
    return parser


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (``None``: unbounded on that side)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_bounds(low, high)}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a finite number {_bounds(low, high, low_open)}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _bounds(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low}"
    if high is not None:
        return f"≤ {high}"
    return "finite"

"""The argparse helpers every ``lightbsr`` subcommand uses (standard library only).

The core CLI (:mod:`lightbsr.cli`) imports the stage CLIs, and the stage CLIs need the house
formatter: both import it from here, so neither imports the other.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "add_command"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written, defaults shown."""


def add_command(
    subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Create a subcommand parser with the house formatter (defaults shown, description kept as written)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=HelpFormatter
    )
    return parser

"""What a refused command must print: one ``lightbsr: error:`` line on stderr, no traceback."""

from __future__ import annotations


def one_error_line(err: str, *, allow_warnings: bool = False) -> str:
    """The one error line of ``err`` (asserting there is exactly one and no traceback).

    ``allow_warnings``: ``lightbsr: warning:`` lines may stand beside it (e.g. a skipped corrupt video frame).
    """
    lines = [
        line
        for line in err.splitlines()
        if line.strip() and not (allow_warnings and line.startswith("lightbsr: warning:"))
    ]
    assert len(lines) == 1, err
    assert lines[0].startswith("lightbsr: error: ") and "Traceback" not in err
    return lines[0]

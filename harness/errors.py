"""The one exception type the command line turns into a clear, one-line error, the exit
codes, and the one-line summary of a recorded error."""

from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: the message names the problem and the fix, on one line."""


# Exit codes, by kind (docs/ERRORS.md): argparse's own usage errors exit 2 as well.
EXIT_OK = 0
EXIT_REFUSED = 1  # a refused input or a runtime error: one line on stderr naming the fix
EXIT_USAGE = 2  # the command line itself is wrong (unknown option, missing argument)


def error_line(text: str | None) -> str:
    """An error's one-line summary ('' for none), for listings and job histories.

    A Python traceback's first line says nothing ("Traceback (most recent call last):"); its
    last non-empty line is the exception, so that is the one shown.
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]

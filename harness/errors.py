"""The one exception type the command line turns into a clear, one-line error."""

from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: the message names the problem and the fix, on one line."""


# Exit codes, by kind (docs/ERRORS.md): argparse's own usage errors exit 2 as well.
EXIT_OK = 0
EXIT_REFUSED = 1  # a refused input or a runtime error: one line on stderr naming the fix
EXIT_USAGE = 2  # the command line itself is wrong (unknown option, missing argument)

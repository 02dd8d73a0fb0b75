"""The one exception type the command line turns into a clear, one-line error."""

from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: the message names the problem and the fix, on one line."""

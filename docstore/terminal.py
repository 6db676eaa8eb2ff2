"""What the command lines share about their standard output."""

from __future__ import annotations

import io
import os
import sys


def drop_stdout() -> None:
    """Send what is left of standard output nowhere, once its reader is gone (`... | head`):
    flushing it at exit would raise BrokenPipeError again. A standard output without a file
    descriptor (as in tests) is left as it is."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


__all__ = ["drop_stdout"]

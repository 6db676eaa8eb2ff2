"""What the command lines share about their output."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any, TextIO

CLOSED = "error: the output was closed (broken pipe): stopped there"


class WholeOptionsParser(argparse.ArgumentParser):
    """An argument parser that takes options only as spelled in full, its subcommands' too
    (they are made of its class): argparse's default let "--y" stand for --yes-destroy-data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def output_closed() -> None:
    """Say, on stderr, that the output's reader is gone (`... | head`), and send what is left
    of it nowhere: flushing it at exit would raise BrokenPipeError again. With `2>&1` stderr
    is the same closed pipe: then it goes nowhere too."""
    _drop(sys.stdout)
    try:
        print(CLOSED, file=sys.stderr, flush=True)
    except OSError:
        _drop(sys.stderr)


def _drop(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null (one without a descriptor, as in tests,
    is left as it is)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


__all__ = ["CLOSED", "output_closed"]

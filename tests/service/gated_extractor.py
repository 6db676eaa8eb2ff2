"""An extractor for worker tests: it marks each document it starts, then waits for a gate.

The worker subprocess loads it with ``--extractor gated_extractor:gated_extract``; GATE_DIR names
the directory where it leaves ``started-<filename>`` and waits for a file named ``open``.
"""

import os
import time
from pathlib import Path

from docstore import Extraction, ProgressCallback, extract_text


def gated_extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
    """`extract_text`, once the test opens the gate (runs on a worker thread, so it may block)."""
    gate = Path(os.environ["GATE_DIR"])
    (gate / f"started-{filename}").touch()
    while not (gate / "open").exists():
        time.sleep(0.02)
    return extract_text(data, filename, report)

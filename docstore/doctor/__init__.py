"""`docstore doctor`: audits the invariants that tie PostgreSQL rows, Redis queue messages,
caches and progress, and blobs together, and repairs what is safe to repair. It reads every
store a page at a time. It sits beside `docstore.store` and may import everything below it
(repositories, the Redis side, intake), never the store or the command line.

``docstore.doctor.run(store)`` audits a `Docstore`; ``await docstore.doctor.run_async(store)``
an `AsyncDocstore`. Both return a `DoctorReport`.
"""

from docstore.doctor.audit import Doctor, StoreParts, run
from docstore.doctor.audit_async import AsyncDoctor, AsyncStoreParts
from docstore.doctor.audit_async import run as run_async
from docstore.doctor.findings import FINDING_KINDS, DoctorReport, Finding, FindingKind

__all__ = [
    "FINDING_KINDS",
    "AsyncDoctor",
    "AsyncStoreParts",
    "Doctor",
    "DoctorReport",
    "Finding",
    "FindingKind",
    "StoreParts",
    "run",
    "run_async",
]

"""OpenTelemetry traces and metrics of docstore, behind the optional `otel` extra. Nothing here
imports OpenTelemetry at import time, and every hook is a no-op when the API is absent or
turned off (`OTEL_SDK_DISABLED=true`, `DOCSTORE_TELEMETRY=off`). It sits at the bottom layer:
the PostgreSQL and Redis cores, the Redis side and intake call its hooks; it imports nothing
of docstore's above settings and errors.

The application configures OpenTelemetry (a tracer and meter provider, exporters) as usual;
docstore reports through the global providers under the instrumentation scope ``docstore``.
"""

from docstore.observability.blob_ops import instrument_blob_store
from docstore.observability.database import observe_pool, observe_query
from docstore.observability.messaging import (
    count_cache,
    count_rate_limit,
    observe_processing,
    observe_submit,
    record_queue_state,
    trace_fields,
)
from docstore.observability.redis_commands import instrument_redis, name_script
from docstore.observability.state import disable, refresh, telemetry

__all__ = [
    "count_cache",
    "count_rate_limit",
    "disable",
    "instrument_blob_store",
    "instrument_redis",
    "name_script",
    "observe_pool",
    "observe_processing",
    "observe_query",
    "observe_submit",
    "record_queue_state",
    "refresh",
    "telemetry",
    "trace_fields",
]

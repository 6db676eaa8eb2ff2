"""The OpenTelemetry SDK with in-memory exporters, set once per test process (a global tracer
and meter provider can be set only once), and turned on only for the tests that ask for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from docstore import observability


@dataclass
class Otel:
    spans: Any
    reader: Any

    def finished(self) -> list[Any]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        """Data points by instrument name, from one collection."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@cache
def _providers() -> Otel:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Otel(spans, reader)


@pytest.fixture(name="otel")
def otel_fixture() -> Iterator[Otel]:
    """Spans and metrics recorded by docstore during this test (telemetry off after it)."""
    found = _providers()
    found.spans.clear()
    found.reader.get_metrics_data()  # drop what other tests recorded (cumulative points stay)
    observability.refresh()
    assert observability.telemetry() is not None
    try:
        yield found
    finally:
        observability.disable()
        found.spans.clear()


__all__ = ["Otel", "otel_fixture"]

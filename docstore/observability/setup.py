"""A ready-made OpenTelemetry setup for services that have none yet (the example service): the
SDK's tracer provider, a meter provider read by Prometheus at ``/metrics``, and an ASGI
middleware that makes each HTTP request a SERVER span (the parent of docstore's spans). Needs
the `otel-sdk` extra; applications with their own setup (exporters, instrumentations) skip it.
"""

from __future__ import annotations

import os
from typing import Any

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_configured: dict[str, Any] = {}


def configure(service_name: str = "docstore", span_exporter: Any = None) -> bool:
    """Set the global tracer and meter providers once per process (spans to `span_exporter`
    through a batch processor when given; metrics for `prometheus_text`). False when the SDK is
    not installed, OpenTelemetry is turned off, or a provider was already set elsewhere."""
    if _configured:
        return True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    )
    _configured["tracer_provider"] = tracer_provider
    from docstore.observability.state import refresh

    refresh()
    return True


def prometheus_text() -> bytes:
    """Every metric of the process in the Prometheus text format (empty before `configure`)."""
    if not _configured:
        return b""
    from prometheus_client import REGISTRY, generate_latest

    return bytes(generate_latest(REGISTRY))


class TracingMiddleware:
    """ASGI middleware: a SERVER span per HTTP request, named ``<method> <route>`` once the
    route is known, continuing a W3C `traceparent` the client sent. A pass-through while no
    tracer provider is set."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from docstore.observability.state import NO_EXCEPTION_EVENTS, telemetry

        state = telemetry()
        tracer = state.tracer() if state is not None else None
        if state is None or tracer is None or scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = str(scope.get("method", "GET"))
        status: dict[str, int] = {}

        async def send_and_note(message: Any) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        with tracer.start_as_current_span(
            method,
            context=state.propagate.extract(headers),
            kind=state.trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            **NO_EXCEPTION_EVENTS,
        ) as span:
            try:
                await self.app(scope, receive, send_and_note)
            except BaseException as exc:
                state.failed(span, type(exc))
                raise
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if "code" in status:
                    span.set_attribute("http.response.status_code", status["code"])
                    if status["code"] >= 500:
                        span.set_status(state.trace.Status(state.trace.StatusCode.ERROR))


__all__ = ["PROMETHEUS_CONTENT_TYPE", "TracingMiddleware", "configure", "prometheus_text"]

"""Whether docstore reports to OpenTelemetry, decided on first use (never at `import docstore`).

Telemetry is on when `opentelemetry-api` can be imported, unless `OTEL_SDK_DISABLED=true` or
`DOCSTORE_TELEMETRY=off`; then no hook imports or calls OpenTelemetry. With the API alone (no
SDK), nothing is even measured: docstore asks at most once a second whether the application has
set a tracer or a meter provider (either can be set once per process), and until one is,
`reporting()` is None and the hooks go straight to the call they wrap.
"""

from __future__ import annotations

import os
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

SCOPE = "docstore"
# How often, at most, docstore looks for a tracer provider while none is set.
PROVIDER_CHECK_SECONDS = 1.0
# For start_as_current_span: no exception event (message, traceback) and no status taken from
# the exception; `Telemetry.failed` marks the span by the error's type instead.
NO_EXCEPTION_EVENTS = {"record_exception": False, "set_status_on_exception": False}


def _docstore_version() -> str:
    try:
        return version("docstore")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0"


class Telemetry:
    """The OpenTelemetry API modules, docstore's tracer (once a provider is set) and meter."""

    def __init__(self) -> None:
        from opentelemetry import metrics, propagate, trace

        self.trace = trace
        self.metrics = metrics
        self.propagate = propagate
        self.version = _docstore_version()
        self.meter = metrics.get_meter(SCOPE, self.version)
        self._tracer: Any = None
        self._metering = False
        self._next_check = 0.0
        # Instruments by name: the hot paths look them up here first (no keyword arguments).
        self.instruments: dict[str, Any] = {}

    def tracer(self) -> Any:
        """docstore's tracer, or None while the application has set no tracer provider."""
        if self._tracer is None:
            self._look()
        return self._tracer

    def recording(self) -> bool:
        """Whether the application set a tracer or a meter provider: something keeps what
        docstore reports."""
        if self._tracer is None and not self._metering:
            self._look()
        return self._tracer is not None or self._metering

    def _look(self) -> None:
        """Look for the providers still unset, at most once a second."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + PROVIDER_CHECK_SECONDS
        if self._tracer is None:
            provider = self.trace.get_tracer_provider()
            if not isinstance(provider, self.trace.ProxyTracerProvider):
                self._tracer = provider.get_tracer(SCOPE, self.version)
        if not self._metering:
            meters = self.metrics.get_meter_provider()
            # Until one is set, the API hands out a proxy (or the no-op one when told to).
            unset = type(meters).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider")
            self._metering = not unset

    def failed(self, span: Any, exc_type: type[BaseException]) -> None:
        """Mark `span` failed by the error's type only: its message and traceback may quote a
        blob key, a file name or a value, which spans never record."""
        span.set_attribute("error.type", exc_type.__name__)
        span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, exc_type.__name__))

    def look_again(self) -> None:
        """Look for a tracer provider on the next call (after setting one, e.g. in tests)."""
        self._next_check = 0.0

    def has(self, name: str) -> bool:
        """True once the instrument `name` exists."""
        return name in self.instruments

    def instrument(self, name: str, make: str, **options: Any) -> Any:
        """The instrument `name`, created once with `meter.<make>(name, **options)`."""
        found = self.instruments.get(name)
        if found is None:
            create = getattr(self.meter, make)
            try:
                found = create(name, **options)
            except TypeError:
                # An opentelemetry-api before 1.23 takes no bucket advice: its default buckets.
                options.pop("explicit_bucket_boundaries_advisory", None)
                found = create(name, **options)
            self.instruments[name] = found
        return found


_UNSET: Any = object()
_state: Telemetry | None = _UNSET
_enabled = True


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return os.environ.get("DOCSTORE_TELEMETRY", "").strip().lower() not in {"off", "0", "false"}


def telemetry() -> Telemetry | None:
    """The telemetry in force, or None when OpenTelemetry is absent or turned off."""
    global _state, _enabled
    if _state is _UNSET:
        _state = None
        _enabled = _wanted()
        if _enabled:
            try:
                _state = Telemetry()
            except ImportError:
                _state = None
    return _state if _enabled else None


def reporting() -> Telemetry | None:
    """The telemetry in force when something keeps what docstore reports (a tracer or meter
    provider is set); None otherwise, and the hot paths then measure nothing at all."""
    state = telemetry()
    return state if state is not None and state.recording() else None


def disable() -> None:
    """Stop reporting from here on (hooks already installed become no-ops)."""
    global _enabled
    _enabled = False


def refresh() -> None:
    """Decide again from the environment, and look for a tracer provider on the next call
    (after the application set one, or in tests)."""
    global _state, _enabled
    if _state is None or _state is _UNSET:
        _state = _UNSET  # not loaded (or the API was missing): try again on next use
        return
    _enabled = _wanted()
    _state.look_again()


__all__ = [
    "PROVIDER_CHECK_SECONDS",
    "SCOPE",
    "Telemetry",
    "disable",
    "refresh",
    "reporting",
    "telemetry",
]

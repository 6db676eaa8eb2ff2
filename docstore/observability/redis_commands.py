"""Redis telemetry: a CLIENT span and a `db.client.operation.duration` sample per command,
script call (named by its script: ``EVALSHA queue_ack``, `db.stored_procedure.name`) and
pipeline (``PIPELINE``, `db.operation.batch.size`). Never a key, an argument or a password.

`instrument_redis` wraps one client's `execute_command` and `pipeline` (the way every command,
script and pipeline of redis-py goes out); a client is wrapped once, and not at all when
telemetry is off.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from functools import lru_cache
from typing import Any

from redis.exceptions import NoScriptError

import docstore.observability.instruments as instruments
from docstore.observability.database import server_attributes
from docstore.observability.state import Telemetry, reporting, telemetry

_MARK = "_docstore_telemetry"
# Script digests (SHA-1 of the source) -> the shipped script's name.
_script_names: dict[str, str] = {}


def name_script(sha: str, name: str) -> None:
    """Tell the spans of EVALSHA `sha` that it runs the shipped script `name`."""
    _script_names[sha] = name


@lru_cache(maxsize=4096)
def _attributes(operation: str, script: str | None, address: str, db: int) -> dict[str, Any]:
    found: dict[str, Any] = {
        "db.system.name": "redis",
        "db.operation.name": operation,
        "db.namespace": str(db),
        **server_attributes(address),
    }
    if script:
        found["db.stored_procedure.name"] = script
        found["db.query.summary"] = f"{operation} {script}"
    return found


def _command(args: tuple[Any, ...]) -> tuple[str, str | None]:
    name = args[0] if args else "?"
    operation = (name.decode() if isinstance(name, bytes) else str(name)).upper()
    script = None
    if operation in ("EVALSHA", "EVALSHA_RO") and len(args) > 1:
        script = _script_names.get(str(args[1]), "unknown")
    return operation, script


class _Call:
    """One command's span and duration."""

    __slots__ = ("attributes", "name", "span", "started", "state")

    def __init__(
        self,
        state: Telemetry,
        name: str,
        attributes: dict[str, Any],
        span_only: dict[str, Any] | None = None,
    ) -> None:
        """`attributes` go on the span and the duration metric; `span_only` on the span alone
        (values without a bound, such as a pipeline's size, would make one series each)."""
        self.state, self.name, self.attributes = state, name, attributes
        tracer = state.tracer()
        self.span = (
            tracer.start_span(
                name,
                kind=state.trace.SpanKind.CLIENT,
                attributes={**attributes, **span_only} if span_only else attributes,
            )
            if tracer is not None
            else None
        )
        self.started = time.perf_counter()

    def end(self, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - self.started
        if error is not None and _expected(self.name, error):
            error = None
        attributes = self.attributes
        if error is not None:
            attributes = {**attributes, "error.type": type(error).__name__}
        if self.span is not None:
            if error is not None:
                self.span.set_attribute("error.type", type(error).__name__)
                self.span.set_status(
                    self.state.trace.Status(self.state.trace.StatusCode.ERROR, type(error).__name__)
                )
            self.span.end()
        instruments.operation_duration(self.state).record(elapsed, attributes)


def _expected(name: str, error: BaseException) -> bool:
    """An error reply that is an answer, not a failure: BUSYGROUP (the group exists, as every
    process but the first expects) and NOSCRIPT (a script not yet loaded after Redis started,
    restarted or failed over: loaded and run again at once). Recorded as failures, each
    restart set off error-rate alerts."""
    if name.startswith("XGROUP"):
        return "BUSYGROUP" in str(error)
    return name.startswith("EVALSHA") and isinstance(error, NoScriptError)


def _start(address: str, db: int, args: tuple[Any, ...]) -> _Call | None:
    state = reporting()
    if state is None:
        return None
    operation, script = _command(args)
    name = f"{operation} {script}" if script else operation
    return _Call(state, name, _attributes(operation, script, address, db))


def _start_pipeline(address: str, db: int, pipe: Any) -> _Call | None:
    state = reporting()
    if state is None:
        return None
    size: dict[str, Any] = {}
    with contextlib.suppress(TypeError):  # redis-py's pipelines, cluster ones too, have a len
        size["db.operation.batch.size"] = len(pipe)
    return _Call(state, "PIPELINE", _attributes("PIPELINE", None, address, db), size)


def instrument_redis(client: Any, address: str) -> None:
    """Trace and time every command `client` sends (once per client; nothing when off)."""
    if telemetry() is None or getattr(client, _MARK, False):
        return
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    db = int(kwargs.get("db", 0) or 0)
    execute = client.execute_command
    make_pipeline = client.pipeline
    if inspect.iscoroutinefunction(execute):

        async def execute_async(*args: Any, **options: Any) -> Any:
            call = _start(address, db, args)
            if call is None:
                return await execute(*args, **options)
            try:
                reply = await execute(*args, **options)
            except BaseException as exc:
                call.end(exc)
                raise
            call.end(None)
            return reply

        client.execute_command = execute_async
    else:

        def execute_sync(*args: Any, **options: Any) -> Any:
            call = _start(address, db, args)
            if call is None:
                return execute(*args, **options)
            try:
                reply = execute(*args, **options)
            except BaseException as exc:
                call.end(exc)
                raise
            call.end(None)
            return reply

        client.execute_command = execute_sync

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        # While nothing records, a pipeline is left as it is: wrapping its `execute` cost
        # about 8% of a rate limit decision's CPU (each decision makes one).
        if reporting() is not None:
            _instrument_pipeline(pipe, address, db)
        return pipe

    client.pipeline = pipeline
    setattr(client, _MARK, True)


def _instrument_pipeline(pipe: Any, address: str, db: int) -> None:
    run = pipe.execute
    if inspect.iscoroutinefunction(run):

        async def execute_async(*args: Any, **kwargs: Any) -> Any:
            call = _start_pipeline(address, db, pipe)
            if call is None:
                return await run(*args, **kwargs)
            try:
                replies = await run(*args, **kwargs)
            except BaseException as exc:
                call.end(exc)
                raise
            call.end(None)
            return replies

        pipe.execute = execute_async
    else:

        def execute_sync(*args: Any, **kwargs: Any) -> Any:
            call = _start_pipeline(address, db, pipe)
            if call is None:
                return run(*args, **kwargs)
            try:
                replies = run(*args, **kwargs)
            except BaseException as exc:
                call.end(exc)
                raise
            call.end(None)
            return replies

        pipe.execute = execute_sync


__all__ = ["instrument_redis", "name_script"]

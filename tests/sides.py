"""Both sides of docstore behind one blocking surface, so a test written once proves each.

The `side` fixture is parametrised over "sync" and "async". On the sync side every helper hands
back docstore's own objects untouched. On the async side the twin (`AsyncDocstore`,
`AsyncRedisCache`, ...) lives on an event loop running in a thread of its own, and `Blocking`
proxies run each coroutine a call returns to completion there, so the same test body (plain
code, threads, hypothesis) drives the async store: each test thread waits for its own call
while the loop serves all of them at once.

Test modules use the fixtures by importing them:
``from sides import side_fixture, side_store_fixture  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import pytest

from docstore import Docstore, RedisCore, Settings
from docstore.redis.client import new_redis

T = TypeVar("T")

SIDES = ["sync", "async"]


class LoopThread:
    """An event loop running forever in a daemon thread; `run` waits for one awaitable on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="async-side", daemon=True)
        self.thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        if threading.current_thread() is self.thread:
            # A sync callback running on the loop cannot wait for the loop: it would hang.
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError("a blocking call made on the event loop's own thread")

        async def awaited() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(awaited(), self.loop).result()

    def close(self) -> None:
        """Cancel what still runs, finish async generators and the executor, stop the loop."""

        async def wind_down() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        self.run(wind_down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@functools.cache
def _is_async_type(kind: type) -> bool:
    """True for classes with coroutine or async-generator methods, or async protocols."""
    if any(hasattr(kind, name) for name in ("__aenter__", "__aiter__", "__anext__")):
        return True
    return any(
        inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        for _, member in inspect.getmembers(kind, inspect.isfunction)
    )


def _takes_async_callable(method: Callable[..., Any], name: str) -> bool:
    """True when parameter `name` of `method` is declared as a coroutine function (`AsyncCall`)."""
    try:
        parameter = inspect.signature(method).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and "AsyncCall" in str(parameter.annotation)


def _awaitable_callable(function: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A plain zero-argument callable as the coroutine function an async method awaits."""

    async def call() -> Any:
        return function()

    return call


class Blocking:
    """An async object seen through blocking calls: what a call returns is awaited on the loop,
    async context managers and iterators become sync ones, async results are wrapped again."""

    __slots__ = ("_loop", "_target")

    def __init__(self, target: Any, loop: LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    def __getattr__(self, name: str) -> Any:
        return blocking(getattr(self._target, name), self._loop)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, unwrapped(value))

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target = self._target
        args = tuple(unwrapped(a) for a in args)
        kwargs = {k: unwrapped(v) for k, v in kwargs.items()}
        args, kwargs = _adapt_callbacks(target, args, kwargs)
        return blocking(target(*args, **kwargs), self._loop)

    def __enter__(self) -> Any:
        return blocking(self._loop.run(self._target.__aenter__()), self._loop)

    def __exit__(self, *exc_info: Any) -> bool | None:
        return cast("bool | None", self._loop.run(self._target.__aexit__(*exc_info)))

    def __iter__(self) -> Iterator[Any]:
        iterator = self._target.__aiter__()
        while True:
            try:
                item = self._loop.run(iterator.__anext__())
            except StopAsyncIteration:
                return
            yield blocking(item, self._loop)


def _adapt_callbacks(
    method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Turn plain callables given where the async method awaits one (a cache loader) into
    coroutine functions; an extractor stays plain (the async flow runs it on a thread)."""
    try:
        bound = inspect.signature(method).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    for name, value in bound.arguments.items():
        if (
            callable(value)
            and not inspect.iscoroutinefunction(value)
            and _takes_async_callable(method, name)
        ):
            bound.arguments[name] = _awaitable_callable(value)
    return bound.args, bound.kwargs


def blocking(value: Any, loop: LoopThread) -> Any:
    """`value` as a blocking caller sees it (see `Blocking`)."""
    # Coroutines and futures only: a redis.asyncio client is awaitable too (it returns itself).
    if inspect.iscoroutine(value) or asyncio.isfuture(value):
        return blocking(loop.run(value), loop)
    if isinstance(value, type | Blocking) or inspect.ismodule(value):
        return value
    if callable(value) and (inspect.ismethod(value) or inspect.isfunction(value)):
        return Blocking(value, loop)
    if _is_async_type(type(value)):
        return Blocking(value, loop)
    return value


def unwrapped(value: Any) -> Any:
    """The object behind a proxy (a connection handed back as `conn=`), else `value`."""
    return object.__getattribute__(value, "_target") if isinstance(value, Blocking) else value


def twin(sync: Any) -> Any:
    """The async source of a generated class or function: `docstore.x.Name` →
    `docstore.x_async.AsyncName` (functions keep their name)."""
    module = importlib.import_module(f"{sync.__module__}_async")
    name = f"Async{sync.__name__}" if isinstance(sync, type) else sync.__name__
    return getattr(module, name)


class Side:
    """One side of docstore, with the helpers a test needs to use either the same way."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = LoopThread() if name == "async" else None

    @property
    def is_async(self) -> bool:
        return self._loop is not None

    def __repr__(self) -> str:
        return f"Side({self.name!r})"

    def twin(self, sync: T) -> T:
        """`sync` itself, or its async twin (a class or a function)."""
        return cast(T, twin(sync)) if self.is_async else sync

    def blocking(self, value: T) -> T:
        """`value` itself, or a blocking proxy of the async object `value`."""
        return value if self._loop is None else cast(T, blocking(value, self._loop))

    def make(self, sync: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Build `sync(*args, **kwargs)`, or its async twin on the loop (where it will be used),
        seen through a blocking proxy."""
        if self._loop is None:
            return sync(*args, **kwargs)
        build = twin(sync)
        args = tuple(unwrapped(a) for a in args)
        kwargs = {k: unwrapped(v) for k, v in kwargs.items()}

        async def on_the_loop() -> Any:
            return build(*args, **kwargs)

        return cast(T, blocking(self._loop.run(on_the_loop()), self._loop))

    def connect(self, settings: Settings, **kwargs: Any) -> Docstore:
        """`Docstore.connect(settings, ...)`, or `await AsyncDocstore.connect(...)` behind a
        blocking proxy (a context manager too, closing the store on exit)."""
        if self._loop is None:
            return Docstore.connect(settings, **kwargs)
        loop = self._loop
        kwargs = {k: unwrapped(v) for k, v in kwargs.items()}
        return cast(Docstore, blocking(twin(Docstore).connect(settings, **kwargs), loop))

    def close_redis(self, client: Any) -> None:
        """Close a Redis client made by `make(new_redis, ...)` (`aclose` on the async side)."""
        if self.is_async:
            client.aclose()
        else:
            client.close()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(params=SIDES, name="side")
def side_fixture(request: pytest.FixtureRequest) -> Iterator[Side]:
    """The sync side, then the async side (the async store driven through blocking proxies)."""
    side = Side(request.param)
    yield side
    side.close()


@pytest.fixture(name="side_store")
def side_store_fixture(side: Side, docstore_settings: Settings) -> Iterator[Docstore]:
    """`docstore_store` of this side: an opened store on this test's servers."""
    store = side.connect(docstore_settings)
    with cast(AbstractContextManager[Docstore], store) as opened:
        yield opened


__all__ = [
    "SIDES",
    "Blocking",
    "Side",
    "blocking",
    "side_fixture",
    "side_store_fixture",
    "twin",
    "unwrapped",
]


@pytest.fixture(name="core_on")
def core_on_fixture(side: Side) -> Iterator[Callable[[str], RedisCore]]:
    """A Redis core of this side on the Redis at a URL (its client closed after the test)."""
    clients: list[Any] = []

    def make(url: str) -> RedisCore:
        client = side.make(new_redis, Settings.model_validate({"REDIS_URL": url}))
        clients.append(client)
        return side.make(RedisCore, client)

    yield make
    for client in clients:
        side.close_redis(client)

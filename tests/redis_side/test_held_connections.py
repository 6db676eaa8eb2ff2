"""docstore's own Redis clients send on connections they hold between calls (`held_async`):
no pool checkout per command once held, the same replies and errors as redis-py's, and a held
connection never used where it cannot serve (its server restarted, a fork, threads)."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError
from sides import Side, side_fixture, unwrapped  # noqa: F401 (fixtures)

from docstore import Settings
from docstore.redis.client import new_redis
from docstore.testing.servers import LocalRedis

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(side: Side, docstore_redis_url: str) -> Iterator[Any]:
    made = side.make(new_redis, Settings.model_validate({"REDIS_URL": docstore_redis_url}))
    yield made
    side.close_redis(made)


def count_checkouts(client: Any) -> list[int]:
    """Count the connections the client's real pool hands out from now on (it still does)."""
    pool = unwrapped(client).connection_pool
    checkout = pool.get_connection
    counted = [0]
    if inspect.iscoroutinefunction(checkout):

        async def counting_async(*args: Any, **kwargs: Any) -> Any:
            counted[0] += 1
            return await checkout(*args, **kwargs)

        pool.get_connection = counting_async
    else:

        def counting(*args: Any, **kwargs: Any) -> Any:
            counted[0] += 1
            return checkout(*args, **kwargs)

        pool.get_connection = counting
    return counted


def test_commands_and_pipelines_check_out_no_connection_once_one_is_held(client: Any) -> None:
    checkouts = count_checkouts(client)
    for n in range(200):
        assert client.set(f"k{n}", n) is True
        assert client.get(f"k{n}") == str(n).encode()
    for n in range(50):
        pipe = client.pipeline(transaction=False)
        pipe.incr("counter")
        pipe.get(f"k{n}")
        assert pipe.execute() == [n + 1, str(n).encode()]
    assert checkouts[0] == 1


def test_a_pipeline_gives_each_refused_command_its_error_in_place(client: Any) -> None:
    client.set("text", "a")
    pipe = client.pipeline(transaction=False)
    pipe.set("n", 1)
    pipe.lpush("text", "x")  # WRONGTYPE
    pipe.incr("n")
    first, refused, last = pipe.execute(raise_on_error=False)
    assert (first, last) == (True, 2)
    assert isinstance(refused, ResponseError) and "WRONGTYPE" in str(refused)
    pipe.incr("n")
    pipe.lpush("text", "x")
    pipe.incr("n")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        pipe.execute()
    # Every reply was read: the connection serves on, and both INCRs ran.
    assert client.get("n") == b"4"
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        client.lpush("text", "x")
    assert client.get("text") == b"a"
    assert client.pipeline(transaction=False).execute() == []


def test_a_transaction_and_a_script_pipeline_still_run_as_redis_py_runs_them(client: Any) -> None:
    with client.pipeline() as pipe:  # MULTI/EXEC
        pipe.set("a", 1)
        pipe.incr("a")
        assert pipe.execute() == [True, 2]
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    pipe = client.pipeline(transaction=False)
    script(keys=["a"], client=pipe)
    pipe.get("a")
    assert pipe.execute() == [3, b"3"]


def test_a_held_connection_whose_server_restarted_is_replaced_without_an_error(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    try:
        assert client.set("k", 1) is True
        server.stop()
        server.start()  # same port, empty
        # The held connection's server is gone: it goes back to the pool, which reconnects.
        assert client.get("k") is None
        pipe = client.pipeline(transaction=False)
        pipe.set("k", 2)
        pipe.get("k")
        assert pipe.execute() == [True, b"2"]
    finally:
        side.close_redis(client)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_uses_the_connection_its_parent_holds(
    docstore_redis_url: str,
) -> None:
    client = new_redis(Settings.model_validate({"REDIS_URL": docstore_redis_url}))
    try:
        parent_id = client.client_id()
        pid = os.fork()
        if pid == 0:  # the child: a connection of its own, never the parent's socket
            code = 1
            try:
                code = 0 if client.client_id() != parent_id else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.client_id() == parent_id  # the parent's connection was left alone
    finally:
        client.close()


def test_threads_sharing_a_sync_client_each_get_their_own_replies(docstore_redis_url: str) -> None:
    client = new_redis(Settings.model_validate({"REDIS_URL": docstore_redis_url}))
    wrong: list[str] = []

    def work(thread: int) -> None:
        for n in range(300):
            key = f"t{thread}-{n}"
            client.set(key, key)
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.strlen(key)
            got = [client.get(key), *pipe.execute()]
            if got != [key.encode(), key.encode(), len(key)]:
                wrong.append(f"{key}: {got}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []
        # No more connections than threads: each one went back to be used again.
        clients = [c for c in redis.Redis.from_url(docstore_redis_url).client_list()]
        assert len(clients) <= 8 + 1  # + the listing client
    finally:
        client.close()


def test_a_pipeline_stopped_half_way_never_hands_its_late_replies_to_the_next_call(
    client: Any,
) -> None:
    # Its connection went back to the pool open: the pool's check saw no data yet (the server
    # was still asleep), so the next GET read the pipeline's late "OK" as its reply.
    client.set("k", "value")

    def refuse(response: Any, **options: Any) -> Any:
        raise RuntimeError("a reply callback that fails")

    unwrapped(client).set_response_callback("ECHO", refuse)
    pipe = client.pipeline(transaction=False)
    pipe.echo("first")
    pipe.execute_command("DEBUG", "SLEEP", "0.3")
    pipe.set("k", "changed")
    with pytest.raises(RuntimeError, match="callback"):
        pipe.execute()
    assert client.get("k") in (b"value", b"changed")


def test_multi_asked_of_a_pipeline_without_transaction_still_wraps_it(client: Any) -> None:
    # The held way sent the commands without MULTI/EXEC and left the pipeline in MULTI state.
    pipe = client.pipeline(transaction=False)
    pipe.multi()
    pipe.incr("n")
    pipe.incr("n")
    assert pipe.execute() == [1, 2]
    pipe.multi()  # raised "Cannot issue nested calls to MULTI" before
    pipe.incr("n")
    assert pipe.execute() == [3]


def test_held_connections_leave_room_for_what_checks_one_out_of_the_pool(
    side: Side, docstore_redis_url: str
) -> None:
    # Four held connections were all of max_connections=4: MULTI found none left.
    url = docstore_redis_url + "?max_connections=4"
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": url}))
    try:
        waiters = [
            threading.Thread(target=client.blpop, args=([f"empty-{n}"],), kwargs={"timeout": 0.3})
            for n in range(4)
        ]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join()
        with client.pipeline() as pipe:  # MULTI/EXEC: a connection from the pool
            pipe.set("a", 1)
            pipe.incr("a")
            assert pipe.execute() == [True, 2]
    finally:
        side.close_redis(client)

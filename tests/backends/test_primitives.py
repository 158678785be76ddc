"""Waiter, Future, Event, timeout, clock, call_soon, and the ownership of spawned tasks."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from backends import Backend

from .helpers import wait_until

pytestmark = pytest.mark.anyio


async def test_waiter_result(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        waiter = backend.create_waiter()
        results: list[Any] = []

        async def wait() -> None:
            results.append(await waiter.wait())

        backend.spawn(wait)
        backend.spawn(wait)
        await anyio.sleep(0.01)
        assert not waiter.done()
        waiter.set_result(1)
        waiter.set_result(2)
        waiter.set_exception(ValueError())
        assert waiter.done()
        await wait_until(lambda: len(results) == 2)
        assert results == [1, 1]
        assert await waiter.wait() == 1


async def test_waiter_exception(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        waiter = backend.create_waiter()
        error = ValueError("boom")
        waiter.set_exception(error)
        waiter.set_result(1)
        for _ in range(2):
            with pytest.raises(ValueError) as raised:
                await waiter.wait()
            assert raised.value is error


async def test_cancelling_a_wait_leaves_the_waiter_alone(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        waiter = backend.create_waiter()
        with anyio.move_on_after(0.01) as scope:
            await waiter.wait()
        assert scope.cancelled_caught
        assert not waiter.done()
        waiter.set_result("still works")
        assert await waiter.wait() == "still works"


async def test_cancelling_one_of_two_waits_leaves_the_other(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        waiter = backend.create_waiter()
        results: list[Any] = []

        async def wait() -> None:
            results.append(await waiter.wait())

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            with anyio.move_on_after(0.01):
                await waiter.wait()
            waiter.set_result("for the other one")
        assert results == ["for the other one"]


def test_asyncio_waiter_wakes_its_task_in_the_next_iteration() -> None:
    """A confirm or a reply resumes the publisher at once, not after a relay through callbacks."""
    from backends import AsyncioBackend

    async def main() -> None:
        async with AsyncioBackend() as backend:
            waiter = backend.create_waiter()
            task = asyncio.ensure_future(waiter.wait())
            await asyncio.sleep(0)
            waiter.set_result("confirmed")
            await asyncio.sleep(0)
            assert task.done() and task.result() == "confirmed"

    asyncio.run(main())


async def test_unwaited_waiter_exception_is_not_reported(
    make_backend: Callable[[], Backend], caplog: pytest.LogCaptureFixture
) -> None:
    async with make_backend() as backend:
        backend.create_waiter().set_exception(ValueError("nobody waits for this"))
        gc.collect()
        await anyio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_future_result_and_exception(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        future = backend.create_future()
        results: list[Any] = []

        async def wait() -> None:
            results.append(await future)

        backend.spawn(wait)
        await anyio.sleep(0.01)
        assert not future.done()
        future.set_result("confirmed")
        assert future.done()
        await wait_until(lambda: results == ["confirmed"])

        failing = backend.create_future()
        error = ValueError("nacked")
        failing.set_exception(error)
        assert failing.done()
        with pytest.raises(ValueError) as raised:
            await failing
        assert raised.value is error


async def test_cancelling_the_wait_for_a_future_settles_it(make_backend: Callable[[], Backend]) -> None:
    """Its filler finds it done and leaves it alone (filling a cancelled asyncio future raises)."""
    async with make_backend() as backend:
        future = backend.create_future()
        with anyio.move_on_after(0.01) as scope:
            await future
        assert scope.cancelled_caught
        assert future.done()


async def test_event(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        event = backend.create_event()
        woken: list[bool] = []

        async def wait() -> None:
            await event.wait()
            woken.append(True)

        backend.spawn(wait)
        await anyio.sleep(0.01)
        assert not event.is_set() and not woken
        event.set()
        assert event.is_set()
        await wait_until(lambda: woken == [True])
        await event.wait()  # returns at once while set
        event.clear()
        assert not event.is_set()
        with anyio.move_on_after(0.01) as scope:
            await event.wait()
        assert scope.cancelled_caught


async def test_event_wakes_every_waiter_once_set_even_if_cleared_at_once(
    make_backend: Callable[[], Backend],
) -> None:
    async with make_backend() as backend:
        event = backend.create_event()
        woken: list[int] = []

        async def wait(number: int) -> None:
            await event.wait()
            woken.append(number)

        for number in range(3):
            backend.spawn(wait, number)
        with anyio.move_on_after(0.01):
            await event.wait()  # a wait cancelled before set() leaves the others alone
        event.set()
        event.clear()  # before any waiter has run: each was woken by the set() all the same
        await wait_until(lambda: sorted(woken) == [0, 1, 2])
        assert not event.is_set()


async def test_timeout(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        started = backend.time()
        with pytest.raises(TimeoutError), backend.timeout(0.05):
            await backend.sleep(5)
        assert 0.04 <= backend.time() - started < 1
        await backend.sleep(0.01)  # no cancellation left behind
        with backend.timeout(None):
            await backend.sleep(0.01)
        with backend.timeout(5):
            await backend.sleep(0.01)


async def test_timeout_leaves_outer_cancellation_alone(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        with anyio.move_on_after(0.05) as scope, backend.timeout(5):
            await backend.sleep(5)
        assert scope.cancelled_caught  # a cancellation, not turned into TimeoutError
        with anyio.move_on_after(5) as scope, pytest.raises(TimeoutError), backend.timeout(0.05):
            await backend.sleep(5)
        assert not scope.cancelled_caught


async def test_sleep_and_clock(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        started = backend.time()
        await backend.sleep(0.05)
        assert 0.04 <= backend.time() - started < 1
        assert abs(backend.time() - anyio.current_time()) < 0.01


def test_asyncio_backend_keeps_a_loop_clock_of_its_own() -> None:
    """Heartbeat deadlines are read off the backend's clock and slept on the loop's: on a loop whose
    time() is not the stdlib's monotonic clock (virtual time in tests, uvloop), both must agree."""
    from backends import AsyncioBackend

    class ShiftedClockLoop(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1000.0

    async def main() -> None:
        async with AsyncioBackend() as backend:
            assert abs(backend.time() - asyncio.get_running_loop().time()) < 0.5

    with asyncio.Runner(loop_factory=ShiftedClockLoop) as runner:
        runner.run(main())


async def test_call_soon(
    make_backend: Callable[[], Backend], anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_backend() as backend:
        calls: list[int] = []
        backend.call_soon(lambda: calls.append(1))
        backend.call_soon(lambda: calls.append(2))
        assert calls == []
        await wait_until(lambda: calls == [1, 2])

        def fail() -> None:
            raise ValueError("from call_soon")

        if anyio_backend == "asyncio":
            # The loop's exception handler logs such errors; the test runner replaces it, so
            # capture what reaches it instead.
            loop = asyncio.get_running_loop()
            previous = loop.get_exception_handler()
            reported: list[dict[str, Any]] = []
            loop.set_exception_handler(lambda _, context: reported.append(context))
            try:
                backend.call_soon(fail)
                await wait_until(lambda: bool(reported))
            finally:
                loop.set_exception_handler(previous)
            assert isinstance(reported[0]["exception"], ValueError)
        else:
            backend.call_soon(fail)
            await wait_until(lambda: "from call_soon" in caplog.text)
            backend.call_soon(lambda: calls.append(3))  # the loop survived
            await wait_until(lambda: calls == [1, 2, 3])


async def test_spawned_exception_is_logged_and_hurts_nobody(
    make_backend: Callable[[], Backend], caplog: pytest.LogCaptureFixture
) -> None:
    async def fail() -> None:
        raise ValueError("boom")

    progress: list[int] = []

    async def keep_going() -> None:
        for step in range(3):
            await anyio.sleep(0.01)
            progress.append(step)

    async with make_backend() as backend:
        backend.spawn(keep_going)
        backend.spawn(fail, name="failing-task")
        await wait_until(lambda: progress == [0, 1, 2])
        await anyio.sleep(0.01)  # and the body is not cancelled either
    [record] = [r for r in caplog.records if r.name == "backends"]
    assert record.levelno == logging.ERROR
    assert "failing-task" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_leaving_cancels_and_awaits_spawned_tasks(make_backend: Callable[[], Backend]) -> None:
    events: list[str] = []

    async def forever(label: str) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            events.append(label)

    async with make_backend() as backend:
        backend.spawn(forever, "a")
        backend.spawn(forever, "b")
        await anyio.sleep(0.01)
        assert events == []
    assert sorted(events) == ["a", "b"]
    with pytest.raises(RuntimeError):
        backend.spawn(forever, "too late")


async def test_body_exception_propagates_unwrapped(make_backend: Callable[[], Backend]) -> None:
    with pytest.raises(KeyError):
        async with make_backend() as backend:
            backend.spawn(anyio.sleep_forever)
            raise KeyError("from the body")


async def test_aclose_from_a_spawned_task(make_backend: Callable[[], Backend]) -> None:
    events: list[str] = []

    async def other() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            events.append("other cancelled")

    async def closer() -> None:
        await backend.aclose()
        events.append("closer carried on")  # it is not cancelled by its own aclose()

    async with make_backend() as backend:
        backend.spawn(other)
        await anyio.sleep(0.01)
        backend.spawn(closer)
        await wait_until(lambda: len(events) == 2)
        assert events == ["other cancelled", "closer carried on"]
        await backend.aclose()  # idempotent


async def test_spawn_needs_a_started_backend(make_backend: Callable[[], Backend]) -> None:
    backend = make_backend()
    with pytest.raises(RuntimeError):
        backend.spawn(anyio.sleep, 0)


async def test_detached_mode(make_backend: Callable[[], Backend], backend_name: str) -> None:
    backend = make_backend()
    if backend_name == "anyio":
        with pytest.raises(RuntimeError, match=r"async with aio_pika\.connect"):
            backend.start_detached()
        return
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(True)

    backend.start_detached()
    backend.spawn(forever)
    await anyio.sleep(0.01)
    await backend.aclose()
    assert cancelled == [True]
    await backend.aclose()

"""Call temporalio (asyncio, Rust core) from gevent greenlets.

The client lives on its own asyncio loop in a native thread.  The loop is
built on the *original* selector: the patched ``selectors`` module would
hand it gevent's selector and the loop would die with LoopExit.  A greenlet
submits a coroutine with ``run_coroutine_threadsafe`` and sleeps on an
AsyncResult; a hub ``async_`` watcher, poked from the loop thread when the
future completes, wakes it.  The hub never blocks on Temporal.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client

from gateway.errors import ApiError
from gateway.native import gevent_patched, original, start_native_thread

CONNECT_TIMEOUT_S = 10.0


class TemporalUnavailable(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(503, "temporal_unavailable", "the workflow service is not reachable", details=detail)


class TemporalBridge:
    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        selector_class = original("selectors", "DefaultSelector", selectors.DefaultSelector)
        self._loop = asyncio.SelectorEventLoop(selector_class())
        self._client: Client | None = None
        self._client_lock: asyncio.Lock | None = None
        start_native_thread(self._run_loop, "temporal-bridge")

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._client_lock = asyncio.Lock()
        self._loop.run_forever()

    async def client(self) -> Client:
        """Connected lazily (and again after a failure) on the loop thread."""
        if self._client is None:
            while self._client_lock is None:
                await asyncio.sleep(0)
            async with self._client_lock:
                if self._client is None:
                    self._client = await asyncio.wait_for(
                        Client.connect(self.address, namespace=self.namespace), CONNECT_TIMEOUT_S)
        return self._client

    def call(self, make: Callable[[Client], Awaitable[Any]], timeout_s: float) -> Any:
        """Run ``make(client)`` on the loop; wait without blocking the hub."""

        async def job() -> Any:
            try:
                client = await self.client()
            except (TimeoutError, OSError, RuntimeError) as exc:
                raise TemporalUnavailable(str(exc) or type(exc).__name__) from None
            return await make(client)

        future = asyncio.run_coroutine_threadsafe(job(), self._loop)
        if not gevent_patched():
            return _result(future, timeout_s)
        import gevent
        from gevent.event import AsyncResult

        hub = gevent.get_hub()
        outcome: AsyncResult = AsyncResult()
        watcher = hub.loop.async_()

        def deliver() -> None:
            if future.cancelled():
                outcome.set_exception(concurrent.futures.CancelledError())
            elif future.exception() is not None:
                outcome.set_exception(future.exception())
            else:
                outcome.set(future.result())

        watcher.start(deliver)
        future.add_done_callback(lambda _f: watcher.send())
        try:
            return outcome.get(timeout=timeout_s)
        except gevent.Timeout:
            future.cancel()
            raise ApiError(504, "temporal_timeout",
                           f"the workflow service did not answer within {timeout_s} s") from None
        finally:
            watcher.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def _result(future: concurrent.futures.Future, timeout_s: float) -> Any:
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise ApiError(504, "temporal_timeout", f"the workflow service did not answer within {timeout_s} s") from None

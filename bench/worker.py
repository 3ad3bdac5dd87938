"""One measurement in a fresh process: ``worker.py CLIENT SCENARIO --port N``.

``run.py`` starts one of these per client, scenario and repetition, so that the
clients never share an interpreter (imports, threads, event loops, memory).
The process pins itself to ``--cpu`` first, runs the scenario against the
smtp-sink on ``--port``, and prints one JSON line on stdout:
``{"ok": true, "metrics": {...}}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any, Protocol

import benchdefs
from benchdefs import HOST, SENDER, Params

Metrics = dict[str, float]


class SyncClient(Protocol):
    """What the benchmark uses of smtplib.SMTP and anysmtp.SMTP."""

    def ehlo(self) -> object: ...
    def noop(self) -> object: ...
    def quit(self) -> object: ...
    def sendmail(
        self, from_addr: str, to_addrs: list[str], msg: bytes, /
    ) -> object: ...


class AsyncSender(Protocol):
    """What the message loops use of an async client: the floor's
    ``FloorClient`` too."""

    async def connect(self) -> object: ...
    async def ehlo(self) -> object: ...
    async def quit(self) -> object: ...
    async def sendmail(
        self, sender: str, recipients: list[str], message: bytes, /
    ) -> object: ...


class AsyncClient(AsyncSender, Protocol):
    """What the benchmark uses of aiosmtplib.SMTP and anysmtp.AsyncSMTP."""

    async def noop(self) -> object: ...


#: The event loop each async client runs on: (anyio backend, backend options).
BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "aiosmtplib": ("asyncio", {}),
    "anysmtp-asyncio": ("asyncio", {}),
    "anysmtp-uvloop": ("asyncio", {"use_uvloop": True}),
    "anysmtp-trio": ("trio", {}),
    # A plain asyncio loop, as asyncio.run() makes.
    "floor-asyncio": ("asyncio", {}),
}


def check_sent(result: object) -> None:
    """Fail when the server refused a recipient (aiosmtplib returns
    ``(refused, message)``, the libraries the refused dict, the floor
    ``None``: it raises on any refusal itself)."""
    refused = result[0] if isinstance(result, tuple) else result
    if refused:
        raise RuntimeError(f"the server refused recipients: {refused!r}")


# -- clients -----------------------------------------------------------------


def sync_factory(client: str, port: int) -> Callable[[], SyncClient]:
    """A function that opens a connected sync client."""
    if client == "smtplib":
        import smtplib

        def open_smtplib() -> SyncClient:
            return smtplib.SMTP(HOST, port)

        return open_smtplib
    import anysmtp

    def open_anysmtp() -> SyncClient:
        return anysmtp.SMTP(HOST, port)

    return open_anysmtp


def async_factory(client: str, port: int) -> Callable[[], AsyncClient]:
    """A function that makes an unconnected async client (no STARTTLS)."""
    if client == "aiosmtplib":
        import aiosmtplib

        def open_aiosmtplib() -> AsyncClient:
            made: AsyncClient = aiosmtplib.SMTP(
                hostname=HOST, port=port, start_tls=False
            )
            return made

        return open_aiosmtplib
    import anysmtp

    def open_anysmtp() -> AsyncClient:
        return anysmtp.AsyncSMTP(hostname=HOST, port=port, start_tls=False)

    return open_anysmtp


def floor_factory(
    port: int, to: list[str], message: bytes
) -> Callable[[], AsyncSender]:
    """A function that makes an unconnected floor client.

    What it sends is built once, here, from ``to`` and ``message``: the loop
    must pass the same to ``sendmail()``, which does not read them.
    """
    import floor

    return floor.Floor(HOST, port, SENDER, to, message).client


def run_async(client: str, func: Callable[[], Awaitable[Metrics]]) -> Metrics:
    import anyio

    backend, options = BACKENDS[client]
    return anyio.run(func, backend=backend, backend_options=options)


# -- scenarios: many messages ------------------------------------------------


def sync_messages(
    open_client: Callable[[], SyncClient],
    message: bytes,
    to: list[str],
    count: int,
    warmup: int,
) -> Metrics:
    client = open_client()
    client.ehlo()
    for _ in range(min(warmup, count)):
        check_sent(client.sendmail(SENDER, to, message))
    start = time.perf_counter()
    for _ in range(count):
        result = client.sendmail(SENDER, to, message)
    elapsed = time.perf_counter() - start
    check_sent(result)
    client.quit()
    return {"rate": count / elapsed, "seconds": elapsed}


async def async_messages(
    open_client: Callable[[], AsyncSender],
    message: bytes,
    to: list[str],
    count: int,
    warmup: int,
) -> Metrics:
    client = open_client()
    await client.connect()
    await client.ehlo()
    for _ in range(min(warmup, count)):
        check_sent(await client.sendmail(SENDER, to, message))
    start = time.perf_counter()
    for _ in range(count):
        result = await client.sendmail(SENDER, to, message)
    elapsed = time.perf_counter() - start
    check_sent(result)
    await client.quit()
    return {"rate": count / elapsed, "seconds": elapsed}


def messages(client: str, port: int, params: Params, scenario: str) -> Metrics:
    if scenario == "small":
        message = benchdefs.small_message(params.small_size)
        to = ["someone@example.net"]
        count = params.small_messages
    else:
        message = benchdefs.small_message(params.small_size)
        to = benchdefs.recipients(params.rcpt_count)
        count = params.rcpt_messages
    if client in benchdefs.SYNC_CLIENTS:
        return sync_messages(
            sync_factory(client, port), message, to, count, params.warmup
        )
    open_client = (
        floor_factory(port, to, message)
        if client == benchdefs.FLOOR
        else async_factory(client, port)
    )
    return run_async(
        client,
        lambda: async_messages(open_client, message, to, count, params.warmup),
    )


# -- scenario: concurrent connections ----------------------------------------


def sync_concurrent(
    open_client: Callable[[], SyncClient],
    message: bytes,
    to: list[str],
    connections: int,
    count: int,
) -> Metrics:
    def one_connection() -> None:
        client = open_client()
        client.ehlo()
        for _ in range(count):
            result = client.sendmail(SENDER, to, message)
        check_sent(result)
        client.quit()

    elapsed = in_threads(one_connection, connections)
    return {"rate": connections * count / elapsed, "seconds": elapsed}


def in_threads(work: Callable[[], object], threads: int) -> float:
    """Run ``work`` in ``threads`` threads at once: the seconds from the first
    start to the last end.

    :raises BaseException: the first error a thread raised.
    """
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    started = [threading.Thread(target=guarded) for _ in range(threads)]
    start = time.perf_counter()
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


async def async_concurrent(
    open_client: Callable[[], AsyncSender],
    message: bytes,
    to: list[str],
    connections: int,
    count: int,
    *,
    asyncio_tasks: bool = False,
) -> Metrics:
    """``connections`` clients at once, ``count`` messages each.

    :param asyncio_tasks: run them in asyncio's own task group instead of
        anyio's, which wraps each task's coroutine in one more that every
        resumption of the task goes through (about 5% of the floor's rate).
    """
    import anyio

    async def one_connection() -> None:
        client = open_client()
        await client.connect()
        await client.ehlo()
        for _ in range(count):
            result = await client.sendmail(SENDER, to, message)
        check_sent(result)
        await client.quit()

    start = time.perf_counter()
    if asyncio_tasks:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(connections):
                tasks.create_task(one_connection())
    else:
        async with anyio.create_task_group() as group:
            for _ in range(connections):
                group.start_soon(one_connection)
    elapsed = time.perf_counter() - start
    return {"rate": connections * count / elapsed, "seconds": elapsed}


def concurrent(client: str, port: int, params: Params) -> Metrics:
    connections = params.concurrent_connections
    count = params.concurrent_messages
    message = benchdefs.small_message(params.small_size)
    to = ["someone@example.net"]
    if client in benchdefs.SYNC_CLIENTS:
        return sync_concurrent(
            sync_factory(client, port), message, to, connections, count
        )
    open_client = (
        floor_factory(port, to, message)
        if client == benchdefs.FLOOR
        else async_factory(client, port)
    )
    # Every client on an asyncio loop runs in asyncio's own task group, as an
    # asyncio program would: the harness's cost is not the client's.
    on_asyncio = BACKENDS[client][0] == "asyncio"
    return run_async(
        client,
        lambda: async_concurrent(
            open_client, message, to, connections, count, asyncio_tasks=on_asyncio
        ),
    )


# -- scenario: many messages through a pool of connections ------------------


def threads_pool(
    open_client: Callable[[], SyncClient],
    message: bytes,
    connections: int,
    count: int,
) -> Metrics:
    """What a pool does by hand: ``connections`` threads, one connection each,
    taking messages from one shared supply (smtplib's usual bulk sender)."""
    to = ["someone@example.net"]
    supply = iter(range(count))
    lock = threading.Lock()

    def take() -> bool:
        with lock:
            return next(supply, None) is not None

    def one_connection() -> None:
        client = open_client()
        client.ehlo()
        while take():
            check_sent(client.sendmail(SENDER, to, message))
        client.quit()

    elapsed = in_threads(one_connection, connections)
    return {"rate": count / elapsed, "seconds": elapsed}


async def clients_pool(
    open_client: Callable[[], AsyncClient],
    message: bytes,
    connections: int,
    count: int,
) -> Metrics:
    """The same with ``connections`` async clients in one task group."""
    import anyio

    to = ["someone@example.net"]
    remaining = count

    async def one_connection() -> None:
        nonlocal remaining
        client = open_client()
        await client.connect()
        await client.ehlo()
        while remaining > 0:
            remaining -= 1
            check_sent(await client.sendmail(SENDER, to, message))
        await client.quit()

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(connections):
            group.start_soon(one_connection)
    elapsed = time.perf_counter() - start
    return {"rate": count / elapsed, "seconds": elapsed}


def check_results(results: list[Any], count: int) -> None:
    """Fail unless send_many sent every message."""
    sent = sum(1 for result in results if result.status == "sent")
    if sent != count:
        failed = next(result for result in results if result.status != "sent")
        raise RuntimeError(f"{count - sent} of {count} not sent: {failed!r}")


def pool(client: str, port: int, params: Params) -> Metrics:
    count = params.pool_messages
    connections = params.pool_connections
    message = benchdefs.small_message(params.small_size)
    if client == "smtplib":
        return threads_pool(sync_factory(client, port), message, connections, count)
    if client == "aiosmtplib":
        open_client = async_factory(client, port)
        return run_async(
            client, lambda: clients_pool(open_client, message, connections, count)
        )
    import anysmtp

    def envelopes() -> Iterator[anysmtp.Envelope]:
        # Made as they are sent, as an application's generator would.
        for _ in range(count):
            yield anysmtp.Envelope(message, SENDER, ["someone@example.net"])

    if client == "anysmtp-sync":
        with anysmtp.SMTPPool(
            HOST, port, max_size=connections, start_tls=False
        ) as sync_pool:
            start = time.perf_counter()
            results = sync_pool.send_many(envelopes())
            elapsed = time.perf_counter() - start
        check_results(results, count)
        return {"rate": count / elapsed, "seconds": elapsed}

    async def measure() -> Metrics:
        async with anysmtp.AsyncSMTPPool(
            HOST, port, max_size=connections, start_tls=False
        ) as async_pool:
            start = time.perf_counter()
            results = await async_pool.send_many(envelopes())
            elapsed = time.perf_counter() - start
        check_results(results, count)
        return {"rate": count / elapsed, "seconds": elapsed}

    return run_async(client, measure)


# -- scenario: connect + EHLO + QUIT -----------------------------------------


def connect(client: str, port: int, params: Params) -> Metrics:
    count = params.connects
    warmup = min(10, count)
    if client in benchdefs.SYNC_CLIENTS:
        open_sync = sync_factory(client, port)

        def cycle_sync() -> None:
            sync_client = open_sync()
            sync_client.ehlo()
            sync_client.quit()

        for _ in range(warmup):
            cycle_sync()
        start = time.perf_counter()
        for _ in range(count):
            cycle_sync()
        elapsed = time.perf_counter() - start
        return {"per_connection": elapsed / count, "seconds": elapsed}
    open_async = async_factory(client, port)

    async def cycle_async() -> None:
        async_client = open_async()
        await async_client.connect()
        await async_client.ehlo()
        await async_client.quit()

    async def measure() -> Metrics:
        for _ in range(warmup):
            await cycle_async()
        start = time.perf_counter()
        for _ in range(count):
            await cycle_async()
        elapsed = time.perf_counter() - start
        return {"per_connection": elapsed / count, "seconds": elapsed}

    return run_async(client, measure)


# -- scenarios: NOOP round trip and the portal hop ---------------------------


def sync_noops(sync_client: SyncClient, count: int) -> float:
    """Seconds per ``noop()``."""
    start = time.perf_counter()
    for _ in range(count):
        sync_client.noop()
    return (time.perf_counter() - start) / count


async def async_noops(async_client: AsyncClient, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        await async_client.noop()
    return (time.perf_counter() - start) / count


def noop(client: str, port: int, params: Params) -> Metrics:
    count = params.noops
    warmup = min(50, count)
    if client in benchdefs.SYNC_CLIENTS:
        sync_client = sync_factory(client, port)()
        sync_client.ehlo()
        sync_noops(sync_client, warmup)
        per_call = sync_noops(sync_client, count)
        sync_client.quit()
        return {"per_call_us": per_call * 1e6}
    open_async = async_factory(client, port)

    async def measure() -> Metrics:
        async_client = open_async()
        await async_client.connect()
        await async_client.ehlo()
        await async_noops(async_client, warmup)
        per_call = await async_noops(async_client, count)
        await async_client.quit()
        return {"per_call_us": per_call * 1e6}

    return run_async(client, measure)


def hop(client: str, port: int, params: Params) -> Metrics:
    """The facade's ``noop()`` against ``AsyncSMTP.noop()`` on asyncio, in
    alternating blocks in this one process: the difference is the facade's cost
    per call, in the calling thread (``hop_us``) and through the portal
    (``portal_hop_us``: the facade called where an event loop runs, as in
    Jupyter, so each call is handed to the portal thread and back)."""
    if client != "anysmtp-sync":
        raise ValueError("the portal hop is measured for anysmtp-sync only")
    calls = params.hop_calls
    warmup = min(50, calls)
    sync_client = sync_factory(client, port)()
    sync_client.ehlo()
    sync_noops(sync_client, warmup)
    open_async = async_factory("anysmtp-asyncio", port)

    async def async_block() -> Metrics:
        async_client = open_async()
        await async_client.connect()
        await async_client.ehlo()
        await async_noops(async_client, warmup)
        per_call = await async_noops(async_client, calls)
        await async_client.quit()
        return {"per_call": per_call}

    async def portal_block() -> float:
        # Made and used where a loop runs: the connection lives in the portal.
        portal_client = sync_factory(client, port)()
        portal_client.ehlo()
        sync_noops(portal_client, warmup)
        per_call = sync_noops(portal_client, calls)
        portal_client.quit()
        return per_call

    facade: list[float] = []
    direct: list[float] = []
    portal: list[float] = []
    for _ in range(params.hop_blocks):
        facade.append(sync_noops(sync_client, calls))
        direct.append(run_async("anysmtp-asyncio", async_block)["per_call"])
        portal.append(asyncio.run(portal_block()))
    sync_client.quit()
    facade_us = statistics.median(facade) * 1e6
    direct_us = statistics.median(direct) * 1e6
    portal_us = statistics.median(portal) * 1e6
    return {
        "facade_us": facade_us,
        "async_us": direct_us,
        "portal_us": portal_us,
        "hop_us": facade_us - direct_us,
        "portal_hop_us": portal_us - direct_us,
    }


# -- scenario: one large message, time and peak memory -----------------------


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-like field of /proc/self/status, in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class MemoryProbe:
    """Peak RSS growth over the RSS at :meth:`start`.

    With /proc, the peak (VmHWM) is reset at the start, so that building the
    message beforehand cannot hide the growth; otherwise ``ru_maxrss`` before
    and after is all there is (an underestimate if the earlier peak was higher).
    """

    def start(self) -> None:
        gc.collect()
        self.maxrss_before = _maxrss_kib()
        self.hwm_reset = _reset_peak_rss()
        self.rss_before = _status_kib("VmRSS")

    def stop(self) -> Metrics:
        maxrss_after = _maxrss_kib()
        hwm = _status_kib("VmHWM")
        if self.hwm_reset and hwm is not None and self.rss_before is not None:
            growth_kib = hwm - self.rss_before
            method = 1.0  # VmHWM after reset
        else:
            growth_kib = maxrss_after - self.maxrss_before
            method = 0.0  # ru_maxrss before/after
        return {
            "rss_growth_mib": max(growth_kib, 0) / 1024,
            "rss_before_mib": (self.rss_before or 0) / 1024,
            "maxrss_after_mib": maxrss_after / 1024,
            "rss_method_hwm": method,
        }


@contextlib.contextmanager
def big_source(size: int, as_file: bool) -> Iterator[bytes | IO[bytes]]:
    """The large message, as bytes in memory or as an open file on disk
    (written in pieces, so that it never sits in this process's memory)."""
    head, line, count = benchdefs.big_message_parts(size)
    if not as_file:
        yield b"".join((head, line * count))
        return
    with tempfile.TemporaryFile(prefix="anysmtp-bench-") as file:
        file.write(head)
        piece = 10_000
        for offset in range(0, count, piece):
            file.write(line * min(piece, count - offset))
        file.flush()
        # On disk before anything is timed: the kernel writing the file back
        # while it is sent made the time vary by half.
        os.fsync(file.fileno())
        file.seek(0)
        yield file


def big(client: str, port: int, params: Params, as_file: bool) -> Metrics:
    """``params.big_sends`` sends of the message on one connection: the median
    time, and the peak RSS growth over all of them."""
    to = ["someone@example.net"]
    probe = MemoryProbe()
    sends = max(1, params.big_sends)
    with big_source(params.big_size, as_file) as source:
        if isinstance(source, bytes):
            size = len(source)
        else:
            size = os.fstat(source.fileno()).st_size
        if as_file and not client.startswith("anysmtp"):
            raise ValueError(f"{client} cannot send a message from a file")

        def rewind() -> None:
            if not isinstance(source, bytes):
                source.seek(0)

        def result(times: list[float], memory: Metrics) -> Metrics:
            return {
                "seconds": statistics.median(times),
                "seconds_first": times[0],
                "size_mib": size / benchdefs.MIB,
                **memory,
            }

        if client in benchdefs.SYNC_CLIENTS:
            send: Callable[[], object]
            if client == "anysmtp-sync":
                import anysmtp

                facade = anysmtp.SMTP(HOST, port)
                closing: Callable[[], object] = facade.quit
                facade.ehlo()

                def send() -> object:
                    return facade.sendmail(SENDER, to, source)

            else:
                assert isinstance(source, bytes)
                message = source
                sync_client = sync_factory(client, port)()
                closing = sync_client.quit
                sync_client.ehlo()

                def send() -> object:
                    return sync_client.sendmail(SENDER, to, message)

            times: list[float] = []
            probe.start()
            for _ in range(sends):
                rewind()
                start = time.perf_counter()
                check_sent(send())
                times.append(time.perf_counter() - start)
            memory = probe.stop()
            closing()
            return result(times, memory)

        async def measure() -> Metrics:
            send_async: Callable[[], Awaitable[object]]
            if client.startswith("anysmtp"):
                import anysmtp

                any_client = anysmtp.AsyncSMTP(
                    hostname=HOST, port=port, start_tls=False
                )
                await any_client.connect()
                await any_client.ehlo()
                closing_async: Callable[[], Awaitable[object]] = any_client.quit

                def send_async() -> Awaitable[object]:
                    return any_client.sendmail(SENDER, to, source)

            else:
                assert isinstance(source, bytes)
                message = source
                async_client = async_factory(client, port)()
                await async_client.connect()
                await async_client.ehlo()
                closing_async = async_client.quit

                def send_async() -> Awaitable[object]:
                    return async_client.sendmail(SENDER, to, message)

            times: list[float] = []
            probe.start()
            for _ in range(sends):
                rewind()
                start = time.perf_counter()
                check_sent(await send_async())
                times.append(time.perf_counter() - start)
            memory = probe.stop()
            await closing_async()
            return result(times, memory)

        return run_async(client, measure)


# -- entry point -------------------------------------------------------------


def measure(client: str, scenario: str, port: int, params: Params) -> Metrics:
    if client not in benchdefs.CLIENT_KEYS:
        raise ValueError(f"unknown client {client!r}")
    if client not in benchdefs.clients_for(scenario):
        raise ValueError(f"{client} does not take part in {scenario!r}")
    if scenario in ("small", "rcpt100"):
        return messages(client, port, params, scenario)
    if scenario == "concurrent":
        return concurrent(client, port, params)
    if scenario in ("big-bytes", "big-file"):
        return big(client, port, params, as_file=scenario == "big-file")
    if scenario == "connect":
        return connect(client, port, params)
    if scenario == "noop":
        return noop(client, port, params)
    if scenario == "hop":
        return hop(client, port, params)
    if scenario == "pool":
        return pool(client, port, params)
    raise ValueError(f"unknown scenario {scenario!r}")


def describe(exc: BaseException) -> str:
    """One line for a table footnote (the first error of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=benchdefs.CLIENT_KEYS)
    parser.add_argument("scenario", choices=sorted(benchdefs.SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this CPU")
    parser.add_argument("--params", default="{}", help="Params as JSON")
    args = parser.parse_args(argv)
    if args.cpu >= 0:
        # First thing, before any thread exists: threads inherit the mask.
        os.sched_setaffinity(0, {args.cpu})
    params = Params.from_json(args.params)
    try:
        metrics = measure(args.client, args.scenario, args.port, params)
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"ok": False, "error": describe(exc)}), flush=True)
        return 1
    print(json.dumps({"ok": True, "metrics": metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

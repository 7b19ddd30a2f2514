"""The reference target: an HTTP/1.1 model server whose capacity is known exactly.

Why it exists: a capacity check can only be trusted if it finds the right answer where the
answer is known. This server has no framework and does almost nothing per request, so its
throughput is set by its parameters and not by parsing overhead:

- every request (any path except ``GET /ping``) holds one of ``slots`` for ``service_ms``
  (a sleep) plus ``cpu_ms`` of real CPU time (burned in a thread pool, GIL released, the
  server's own overhead included), so one
  replica serves ``slots * 1000 / (service_ms + cpu_ms)`` rps, or ``cpu_limit * 1000 / cpu_ms``
  when a CPU limit binds first;
- more than ``slots + queue`` requests in flight get an immediate 503;
- ``coherency_ms`` adds a process-wide lock held ``coherency_ms * (in_flight - 1)`` ms per request,
  so throughput *falls* as concurrency grows (USL coherency, kappa > 0);
- ``memory_mb`` touches a ballast at start, a known working set for memory-limit tests;
- ``stall_every_s`` / ``stall_s`` freeze the server periodically (a GC pause, a noisy neighbour):
  for the first ``stall_s`` of every ``stall_every_s`` period no response leaves; responses due
  meanwhile are sent when the stall ends. Slots are released on time (the stall adds latency, not
  lost capacity), so what an open-loop client must see is known exactly: :func:`stall_latency_ms`;
- ``work_kb`` hashes that many KiB per request: a fixed amount of *work*, not of CPU time, so the
  rate it allows moves with the machine's speed (the platform canary, ``nightcap.analysis.canary``).

Only the standard library is imported, besides its HTTP/1.1 (request parsing and response framing) in
`reference_http.py`, standard-library only too: the process starts in a fraction of a second, and the canary
runs both sources in a stock Python image (`nightcap.targets.canary.server_program`). Its capacity formulas
(what tests and benchmarks compare against) are in `reference_capacity.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nightcap.targets.reference_http import MAX_HEADER_BYTES, BadRequest, read_request, response

__all__ = ["serve", "main"]

MAX_CPU_THREADS = 256
_HASH_BUFFER = memoryview(b"\x5a" * (1024 * 1024))
_MIN_CHUNK = 4096  # hashlib releases the GIL only for buffers > 2 KiB
_FIRST_CHUNK = 64 * 1024

_OK_BODY = b'{"ok": true}'
_OVERLOADED_BODY = b'{"error": "overloaded"}'


# --------------------------------------------------------------------------- server


@dataclass
class _Slot:
    """One unit of concurrency. ``free_at`` is its virtual release time.

    Why virtual: asyncio timers wake up to ~1 ms late; measuring the next request's service from
    the real wake-up would let that error add up (5% at 20 ms). Starting it at
    ``max(arrival, free_at)`` keeps each slot at exactly one request per ``service_ms``.
    """

    free_at: float = 0.0


def _do_work(n_bytes: int) -> None:
    """SHA-256 over ``n_bytes`` (GIL released): the same work on every machine, whatever CPU time it takes."""
    left = n_bytes
    while left > 0:
        chunk = min(left, len(_HASH_BUFFER))
        hashlib.sha256(_HASH_BUFFER[:max(chunk, _MIN_CHUNK)]).digest()
        left -= chunk


def _burn_cpu(seconds: float) -> float:
    """Spend ``seconds`` of this thread's CPU time in C code that releases the GIL.

    Chunks are sized from the measured hash rate to end on time with few GIL round trips: with
    fixed 64 KiB chunks (~35 us each) the GIL handoffs between threads cost up to 15% extra CPU
    under a CPU limit, which would put the server below its formula.
    """
    now = start = time.thread_time()
    end = now + seconds
    chunk = _FIRST_CHUNK
    while now < end:
        before = now
        hashlib.sha256(_HASH_BUFFER[:chunk]).digest()
        now = time.thread_time()
        if now > before:
            rate = chunk / (now - before)  # bytes per CPU-second
            chunk = int(min(len(_HASH_BUFFER), max(_MIN_CHUNK, (end - now) * rate)))
    return now - start


class _ReferenceServer:
    def __init__(
        self,
        slots: int,
        service_ms: float,
        queue: int,
        cpu_ms: float,
        coherency_ms: float,
        stall_every_s: float = 0.0,
        stall_s: float = 0.0,
        work_kb: int = 0,
    ) -> None:
        self.slots = slots
        self.work_bytes = work_kb * 1024
        self.stall_every_s = stall_every_s
        self.stall_s = stall_s if stall_every_s > 0 else 0.0
        self.started = time.monotonic()
        self.service_s = service_ms / 1000.0
        self.queue = queue
        self.cpu_s = cpu_ms / 1000.0
        self.coherency_s = coherency_ms / 1000.0
        self.in_flight = 0
        self.served = 0
        self.rejected = 0
        self.free_slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(slots):
            self.free_slots.put_nowait(_Slot())
        self.lock = asyncio.Lock()
        self.pool = (
            ThreadPoolExecutor(max_workers=min(slots, MAX_CPU_THREADS), thread_name_prefix="cpu")
            if cpu_ms > 0 or work_kb > 0
            else None
        )
        self.writers: set[asyncio.StreamWriter] = set()
        # Self-calibration of the server's own CPU per request (parsing, event loop, thread
        # handoffs: ~0.25 ms here), deducted from each burn so that a request costs cpu_ms of
        # CPU in total and a CPU limit gives exactly cpu_limit * 1000 / cpu_ms rps.
        self.overhead_s = 0.0
        self.burned_s = 0.0
        self.burns = 0
        self._calibrated_at = (time.monotonic(), time.process_time(), 0.0, 0)

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection, one at a time."""
        self.writers.add(writer)
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except BadRequest as exc:
                    body = f'{{"error": "{exc}"}}'.encode()
                    writer.write(response(exc.status, body, "application/json", keep_alive=False))
                    await writer.drain()
                    return
                if request is None:
                    return
                method, path, keep_alive = request
                if method == "GET" and path.split("?", 1)[0] == "/ping":
                    writer.write(response(200, b"ok", "text/plain", keep_alive))
                else:
                    status = await self._work()
                    await self._hold_while_stalled()
                    body = _OK_BODY if status == 200 else _OVERLOADED_BODY
                    writer.write(response(status, body, "application/json", keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _work(self) -> int:
        """Hold a slot as the model says; 503 at once when slots and queue are full."""
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        if self.in_flight >= self.slots + self.queue:
            self.rejected += 1
            return 503
        self.in_flight += 1
        try:
            slot = await self.free_slots.get()
            try:
                start = max(arrival, slot.free_at)
                deadline = start + self.service_s
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                woke = loop.time()
                if self.pool is not None and self.cpu_s > 0:
                    burn_s = max(0.0, self.cpu_s - self.overhead_s)
                    burned = await loop.run_in_executor(self.pool, _burn_cpu, burn_s)
                    self.burned_s += burned  # not `+= await`: that would read before awaiting
                    self.burns += 1
                    self._recalibrate()
                if self.work_bytes and self.pool is not None:
                    await loop.run_in_executor(self.pool, _do_work, self.work_bytes)
                if self.coherency_s > 0:
                    # Priced when the request asks for the lock: by the time it gets it, the holder
                    # before it has already left, which would undercount the concurrency it met.
                    hold = self.coherency_s * (self.in_flight - 1)
                    async with self.lock:
                        await asyncio.sleep(hold)
                # Real work after the wake-up counts in full; the timer's lateness does not.
                slot.free_at = deadline + (loop.time() - woke)
            finally:
                self.free_slots.put_nowait(slot)
            self.served += 1
            return 200
        finally:
            self.in_flight -= 1

    async def _hold_while_stalled(self) -> None:
        """A response due during a stall leaves when the stall ends (stalls start every stall_every_s)."""
        if self.stall_s <= 0:
            return
        phase = (time.monotonic() - self.started) % self.stall_every_s
        if phase < self.stall_s:
            await asyncio.sleep(self.stall_s - phase)

    def _recalibrate(self) -> None:
        """Every 0.25 s: overhead = (process CPU - CPU burned on purpose) / requests burned.

        Capped at half of cpu_ms, so a flood of 503s or pings cannot take away all the work.
        """
        wall0, cpu0, burned0, burns0 = self._calibrated_at
        now = time.monotonic()
        if now - wall0 < 0.25 or self.burns - burns0 < 8:
            return
        cpu = time.process_time()
        measured = ((cpu - cpu0) - (self.burned_s - burned0)) / (self.burns - burns0)
        estimate = 0.5 * self.overhead_s + 0.5 * max(0.0, measured)
        self.overhead_s = min(estimate, 0.5 * self.cpu_s)
        self._calibrated_at = (now, cpu, self.burned_s, self.burns)

    def close_connections(self) -> None:
        for writer in list(self.writers):
            writer.close()


def _allocate_ballast(memory_mb: int) -> bytearray:
    """Allocate and touch every page, so the working set is real (not lazily mapped zeros)."""
    size = memory_mb * 1024 * 1024
    ballast = bytearray(size)
    page = 4096
    ballast[::page] = b"\x01" * len(range(0, size, page))
    return ballast


async def _serve_async(
    port: int, slots: int, service_ms: float, queue: int, cpu_ms: float, coherency_ms: float, host: str,
    stall_every_s: float = 0.0, stall_s: float = 0.0, work_kb: int = 0,
) -> None:
    state = _ReferenceServer(slots, service_ms, queue, cpu_ms, coherency_ms, stall_every_s, stall_s, work_kb)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        state.handle_connection, host, port, limit=MAX_HEADER_BYTES, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        state.close_connections()
        await server.wait_closed()
        if state.pool is not None:
            state.pool.shutdown(wait=False, cancel_futures=True)
        print(f"stopped: served {state.served}, rejected {state.rejected}", file=sys.stderr, flush=True)


def serve(
    port: int,
    slots: int,
    service_ms: float,
    queue: int = 64,
    cpu_ms: float = 0.0,
    coherency_ms: float = 0.0,
    memory_mb: int = 0,
    host: str = "127.0.0.1",
    stall_every_s: float = 0.0,
    stall_s: float = 0.0,
    work_kb: int = 0,
) -> None:
    """Run the reference server until SIGTERM or SIGINT; returns normally (exit 0) then.

    ``port=0`` picks a free port; the "listening on HOST:PORT" line names it.
    """
    if slots <= 0:
        raise ValueError("slots must be positive")
    if min(service_ms, cpu_ms, coherency_ms) < 0 or queue < 0 or memory_mb < 0 or work_kb < 0:
        raise ValueError("service_ms, cpu_ms, coherency_ms, queue, memory_mb and work_kb must be >= 0")
    if stall_s and not 0 < stall_s < stall_every_s:
        raise ValueError("--stall-s must be > 0 and shorter than --stall-every-s")
    ballast = _allocate_ballast(memory_mb) if memory_mb else None
    try:
        asyncio.run(_serve_async(port, slots, service_ms, queue, cpu_ms, coherency_ms, host, stall_every_s, stall_s,
                                 work_kb))
    finally:
        del ballast


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nightcap.targets.reference_server",
        description="HTTP server with exactly known capacity: slots*1000/(service_ms+cpu_ms) rps.",
    )
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--slots", type=int, required=True, help="concurrent requests served")
    parser.add_argument("--service-ms", type=float, required=True, help="time each request holds a slot")
    parser.add_argument("--queue", type=int, default=64, help="requests waiting beyond slots before 503")
    parser.add_argument("--cpu-ms", type=float, default=0.0, help="real CPU time burned per request")
    parser.add_argument("--coherency-ms", type=float, default=0.0, help="shared lock ms per other in-flight request")
    parser.add_argument("--memory-mb", type=int, default=0, help="working set allocated and touched at start")
    parser.add_argument("--stall-every-s", type=float, default=0.0, help="start a stall this often (0: never)")
    parser.add_argument("--stall-s", type=float, default=0.0, help="how long each stall holds every response")
    parser.add_argument("--work-kb", type=int, default=0,
                        help="KiB hashed per request: fixed work whose CPU time depends on the machine (canary)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        serve(
            port=args.port,
            slots=args.slots,
            service_ms=args.service_ms,
            queue=args.queue,
            cpu_ms=args.cpu_ms,
            coherency_ms=args.coherency_ms,
            memory_mb=args.memory_mb,
            host=args.host,
            stall_every_s=args.stall_every_s,
            stall_s=args.stall_s,
            work_kb=args.work_kb,
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

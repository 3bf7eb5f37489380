"""A TCP link that holds each chunk coming back from the server for a fixed delay: a slow
network (or a busy broker) that still answers, for tests of deadlines that must tell slow
from dead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(1 << 16):
            if delay:
                await asyncio.sleep(delay)  # the link's latency, not a wait for a result
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # the other side went away; closing below ends the pair
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@asynccontextmanager
async def slow_link(port: int, upstream_port: int, delay: float) -> AsyncIterator[None]:
    """Serve 127.0.0.1:`port`, piping each connection to `upstream_port`; what the upstream
    sends back arrives `delay` seconds late (per chunk, in order)."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            writer.close()
            return
        for pipe in (_pipe(reader, up_writer, 0.0), _pipe(up_reader, writer, delay)):
            task = asyncio.create_task(pipe)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

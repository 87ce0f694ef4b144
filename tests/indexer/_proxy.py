"""A TCP proxy in front of PostgreSQL that a test can cut and restore: a database outage on demand.

`cut()` aborts every proxied connection and stops listening (new connections are refused);
`restore()` listens again on the same port. `cut_on(pattern)` cuts the moment the client sends
bytes containing `pattern` (e.g. b"COMMIT;"), either before forwarding them (the transaction is
rolled back) or once the server has answered them, swallowing the answer (it committed, but the
client never hears so).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

_CHUNK = 65536


class PgProxy:
    """Proxies 127.0.0.1:<port> to the PostgreSQL server behind `database_url`."""

    def __init__(self, database_url: str) -> None:
        self._url = urlsplit(database_url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._pattern: bytes | None = None
        self._forward_first = False
        self._swallow_reply = False
        self.cuts = 0

    @property
    def url(self) -> str:
        """The database URL, pointing at the proxy."""
        user = self._url.username or "postgres"
        password = f":{self._url.password}" if self._url.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{self._url.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    restore = start

    def cut_on(self, pattern: bytes, *, forward_first: bool = False) -> None:
        """Cut when the client next sends `pattern`."""
        self._pattern, self._forward_first = pattern, forward_first

    async def cut(self) -> None:
        """Abort every connection and refuse new ones until `restore()`."""
        self._pattern, self._swallow_reply = None, False
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = parse_qs(self._url.query).get("host", [self._url.hostname or "127.0.0.1"])[0]
        port = self._url.port or 5432
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await self._open_upstream()
            self._writers.update((client_w, server_w))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client_r, server_w, watch=True))
                tg.create_task(self._pump(server_r, client_w, watch=False))
        except (OSError, ExceptionGroup):
            pass  # a cut connection: both ends are gone already
        finally:
            self._tasks.discard(task)
            client_w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool) -> None:
        while data := await reader.read(_CHUNK):
            if not watch and self._swallow_reply:
                await self.cut()  # the server answered: drop the answer with the connection
                return
            if watch and self._pattern is not None and self._pattern in data:
                self._pattern = None
                if not self._forward_first:
                    await self.cut()
                    return
                self._swallow_reply = True
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

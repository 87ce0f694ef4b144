"""Host discovery: page a relay's `listHosts`, then each PDS's own `listRepos`, a few at a time.

A relay's listRepos is not the whole network (it leaves out accounts it has not crawled); the
PDS hosts it consumes from each list their own accounts. Every round pages the relay's listHosts
into a hash of known hosts (`repo_backfill:hosts:<relay>`), then pages the listRepos of every
host whose status says it serves (`PAGED_STATUSES`), `host_concurrency` hosts at a time. Each
host has its own cursor and skip ledger (`repo_backfill:cursor:<hostname>`,
`repo_backfill:skipped:<hostname>`), and its jobs go through the same listed register as the
relay's, so a repo both list is enqueued once; its marks carry a tag of its host, so that a host
an account migrated away from, which still lists it deactivated, does not re-enqueue it every
round (`workers.ingester.register`). The first round after a start finishes the passes
left unfinished and pages new hosts; every later round (each `recheck_interval_s`) pages every
host from the start, which finds new hosts, new accounts and changed revs. A host that cannot be
reached gives up its pass after `max_consecutive_errors` tries and is tried again next round;
a listHosts item that is not a host goes to `repo_backfill:dlq` with a reason; a listHosts cursor
that does not advance (the same again, or a cycle) ends that round's listing of hosts, and so do
`max_consecutive_errors` failed listHosts calls in a row (the round then pages the hosts known
from earlier rounds). The listing of hosts is a `streams.Source` (`HostListing`) with its own
sink, run by a `SourceRunner` without a producer; its runner's stop event stops the rounds too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio
import orjson
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from atp import AtpError, RateLimited
from atp.xrpc import XrpcClient
from streams import Keys, Outlet, Producer, RunnerConfig, SourceBatch, SourceError, SourceRunner
from workers.ingester.config import IngesterConfig
from workers.ingester.listing import STREAM, ListingSource, bad_item_fields

__all__ = ["PAGED_STATUSES", "HostDiscovery", "HostItem", "HostListing", "discovery_rounds", "parse_host"]

log = logging.getLogger("streamfill.ingester.discovery")

# listHosts statuses whose accounts are served (a missing status is "active"); "offline" and
# "banned" hosts, and statuses this version does not know, are recorded but not paged.
PAGED_STATUSES = frozenset({"active", "idle", "throttled"})
# The field of the hosts hash that counts finished discovery rounds (not a hostname: has a "!").
ROUNDS_FIELD = "!rounds"
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?")
_LIST_HOSTS_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class HostItem:
    """One valid listHosts item."""

    hostname: str
    status: str
    seq: int | None = None
    account_count: int | None = None

    @property
    def paged(self) -> bool:
        return self.status in PAGED_STATUSES


def _optional_int(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is not an integer: {value!r:.50}")
    return value


def parse_host(item: Any) -> HostItem:
    """A listHosts item as a `HostItem`; ValueError says what is wrong with a bad one."""
    if not isinstance(item, dict):
        raise ValueError(f"listHosts item is not an object: {item!r:.100}")
    hostname = item.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        raise ValueError(f"hostname missing or not a string: {hostname!r:.100}")
    name = hostname.strip().lower().rstrip(".")
    if len(name) > 260 or not _HOSTNAME.fullmatch(name) or int(name.partition(":")[2] or 1) > 65535:
        raise ValueError(f"not a hostname[:port] (no scheme, path or user): {hostname!r:.100}")
    status = item.get("status", "active")
    if not isinstance(status, str):
        raise ValueError(f"status is not a string: {status!r:.50}")
    return HostItem(name, status, _optional_int(item, "seq"), _optional_int(item, "accountCount"))


async def discovery_rounds(redis: aioredis.Redis, keys: Keys, relay: str) -> int:
    """How many discovery rounds (listHosts, then every host's pass) have finished for `relay`."""
    return int(await redis.hget(keys.hosts(STREAM, relay), ROUNDS_FIELD) or 0)


class HostDiscovery:
    """Discovers the PDS hosts of one relay and pages their listRepos; a runtime Component."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        config: IngesterConfig,
        relay: str,
        producer: Producer,
        xrpc: XrpcClient,
        *,
        relay_url: str,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self.relay = relay  # host[:port] of the relay: names the hosts hash
        self.relay_url = relay_url
        # listHosts gives hostnames; they are reached with the relay's scheme (https in production).
        self._scheme = relay_url.split("://", 1)[0] if "://" in relay_url else "https"
        self._producer = producer
        self._xrpc = xrpc
        self._hosts_key = keys.hosts(STREAM, relay)
        self._sources: dict[str, ListingSource] = {}
        self.listing = HostListing(
            redis,
            keys,
            relay,
            xrpc,
            producer.config.stream,
            relay_url=relay_url,
            give_up_after=config.max_consecutive_errors,
        )
        self._runner = self.listing.runner  # its stop event stops the rounds too
        self.rounds = 0
        self.in_flight = 0  # hosts being paged now (at most host_concurrency)
        self.max_in_flight = 0

    def retune(self, config: IngesterConfig) -> None:
        """Apply the live-tunable settings (the re-check interval) from the next wait on."""
        self._config = config

    @property
    def bad_items(self) -> int:
        """listHosts items dead-lettered."""
        return self.listing.bad_items

    @property
    def cycles(self) -> int:
        """listHosts listings ended by a cursor that did not advance."""
        return self.listing.cycles

    @property
    def stopped(self) -> bool:
        return self._runner.stopped

    def stop(self) -> None:
        self._runner.stop()
        for source in self._sources.values():
            source.stop()

    @property
    def sources(self) -> list[ListingSource]:
        """The listing sources of the hosts paged so far."""
        return list(self._sources.values())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        recheck = False
        while not self.stopped:
            await self.run_round(recheck=recheck)
            recheck = True
            await self._runner.sleep(self._config.recheck_interval_s)

    async def run_round(self, *, recheck: bool) -> None:
        """List the relay's hosts, then page every host that serves (with `recheck`, from the start)."""
        await self.listing.list_hosts()
        if self.stopped:
            return
        hosts = await self.known_hosts()
        send, receive = anyio.create_memory_object_stream[str](len(hosts) + 1)
        with send:
            for host in hosts:
                if host.paged:
                    send.send_nowait(host.hostname)
        async with anyio.create_task_group() as tg:
            for _ in range(self._config.host_concurrency):
                tg.start_soon(self._pager, receive.clone(), recheck)
            receive.close()
        if not self.stopped:
            self.rounds = await self._redis.hincrby(self._hosts_key, ROUNDS_FIELD, 1)
            log.info("discovery round finished", extra={"relay": self.relay, "hosts": len(hosts)})

    async def _pager(self, receive: MemoryObjectReceiveStream[str], recheck: bool) -> None:
        with receive:
            async for hostname in receive:
                if self.stopped:
                    return
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self._page(self.source(hostname), recheck)
                finally:
                    self.in_flight -= 1

    async def _page(self, source: ListingSource, recheck: bool) -> None:
        """One pass of one host; after a skip-ahead it goes on, after two in a row it gives up."""
        more = await source.run_pass(recheck=recheck)
        while more and not self.stopped:
            pages = source.pages
            more = await source.run_pass(recheck=False)
            if more and source.pages == pages:
                source.runner.give_up("skipped ahead twice in a row")
                return

    def source(self, hostname: str) -> ListingSource:
        """The listing source of one PDS host (made once, so its failure counts carry over)."""
        if hostname not in self._sources:
            self._sources[hostname] = ListingSource(
                self._redis,
                self._keys,
                self._config,
                hostname,
                self._producer,
                self._xrpc,
                url=f"{self._scheme}://{hostname}",
                give_up_after=self._config.max_consecutive_errors,
                tagged=True,
            )
        return self._sources[hostname]

    async def known_hosts(self) -> list[HostItem]:
        """Every host this relay has listed, as last seen."""
        raw = cast("dict[bytes, bytes]", await self._redis.hgetall(self._hosts_key))  # bytes client
        hosts = []
        for name, value in sorted(raw.items()):
            if name.startswith(b"!"):
                continue
            seen = orjson.loads(value)
            hosts.append(HostItem(name.decode(), seen["status"], seen.get("seq"), seen.get("accountCount")))
        return hosts


class HostListing:
    """Pages a relay's listHosts into its hosts hash; a `streams.Source` with its own sink.

    Its runner has no producer and no cursor key: each round's listing starts from the beginning,
    a failed page is asked again from where the listing got to (after the runner's backoff, or the
    relay's Retry-After), and after `give_up_after` failures in a row the runner gives the listing
    up. Good items go into the hash and bad ones to the DLQ in one MULTI; then the cursor goes to
    the runner. A cursor that does not advance ends the listing.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        relay: str,
        xrpc: XrpcClient,
        stream: str,
        *,
        relay_url: str,
        give_up_after: int,
    ) -> None:
        self.name = f"hosts:{relay}"
        self.relay = relay
        self._redis = redis
        self._xrpc = xrpc
        self._url = relay_url
        self._stream = stream  # whose DLQ takes the bad items
        self._dlq = keys.dlq(stream)
        self._hosts_key = keys.hosts(STREAM, relay)
        self._visited: set[str] = set()  # the cursors this listing has asked for
        self.bad_items = 0
        self.cycles = 0  # listings ended by a cursor that did not advance
        self.runner = SourceRunner(redis, self, None, RunnerConfig(give_up_after=give_up_after))

    async def list_hosts(self) -> None:
        """One listing, from the beginning; it ends early when listHosts keeps failing."""
        self._visited.clear()
        await self.runner.run_pass()

    def interrupt(self) -> None:
        """Nothing to cancel: a page in flight is recorded, then the listing ends."""

    async def session(self, cursor: str | None, out: Outlet) -> None:
        """Page listHosts from `cursor` to the end of the listing (or a cursor seen before)."""
        while not out.stopped:
            items, next_cursor = await self._fetch(cursor)
            await self._record(items)
            if next_cursor is None:
                return
            self._visited.add(cursor or "")
            if next_cursor in self._visited:  # the same cursor again, or a cycle: the listing ends here
                self.cycles += 1
                log.error(
                    "listHosts cursor does not advance", extra={"relay": self.relay, "cursor": next_cursor}
                )
                return
            await out.write(SourceBatch(cursor=next_cursor))
            cursor = next_cursor

    async def _fetch(self, cursor: str | None) -> tuple[Sequence[Any], str | None]:
        """One page; a failure is a `SourceError` for the runner (never skipped past)."""
        try:
            page = await self._xrpc.list_hosts(self._url, cursor, limit=_LIST_HOSTS_LIMIT)
        except AtpError as exc:
            log.warning("listHosts failed", extra={"relay": self.relay, "cursor": cursor, "error": str(exc)})
            retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
            raise SourceError(f"{type(exc).__name__}: {exc}", retry_after_s=retry_after) from exc
        return page.hosts, page.cursor

    async def _record(self, items: Sequence[Any]) -> None:
        """Good items into the hosts hash, bad ones into the DLQ with a reason, in one MULTI."""
        now = round(time.time(), 3)
        async with self._redis.pipeline(transaction=True) as pipe:
            for item in items:
                try:
                    host = parse_host(item)
                except ValueError as exc:
                    self.bad_items += 1
                    fields = bad_item_fields(
                        self._stream, self.relay, f"ValueError: {exc}", item, kind="host"
                    )
                    pipe.xadd(self._dlq, fields)  # type: ignore[arg-type]
                    continue
                seen = {"status": host.status, "seq": host.seq, "accountCount": host.account_count, "at": now}
                pipe.hset(self._hosts_key, host.hostname, orjson.dumps(seen))
            await pipe.execute()

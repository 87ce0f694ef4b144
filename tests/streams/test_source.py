"""SourceRunner: cursor with the data, backoff reset only after progress, skip-ahead ledgered, stop."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest
import redis.asyncio as aioredis

from streams import (
    Backoff,
    Keys,
    Outlet,
    Producer,
    ProducerConfig,
    RunnerConfig,
    SourceBatch,
    SourceError,
    SourceRunner,
    dlq_key,
    skipped_ranges,
)
from tests._support import wait_until, xrange

pytestmark = pytest.mark.anyio

Step = Callable[[str | None, Outlet], Awaitable[float | None]]


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """A backoff that records which attempt it was asked for and waits no time."""

    attempts: list[int] | None = None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        assert self.attempts is not None
        self.attempts.append(attempt)
        return 0.0


class Scripted:
    """A source whose sessions are the given steps, in order; it records the cursors it got."""

    name = "scripted"

    def __init__(self, *steps: Step) -> None:
        self._steps = list(steps)
        self.cursors: list[str | None] = []
        self.interrupted = 0

    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        self.cursors.append(cursor)
        return await self._steps.pop(0)(cursor, out)

    def interrupt(self) -> None:
        self.interrupted += 1


def fail(**kwargs: bool) -> Step:
    async def step(cursor: str | None, out: Outlet) -> float | None:
        raise SourceError("upstream down", **kwargs)

    return step


def write(cursor: str, then_fail: bool = False, **kwargs: bool) -> Step:
    async def step(_: str | None, out: Outlet) -> float | None:
        await out.write(SourceBatch([{"n": cursor}], dead_letters=[{"bad": cursor}], cursor=cursor))
        if then_fail:
            raise SourceError("dropped", **kwargs)
        return None

    return step


def runner_for(
    redis: aioredis.Redis,
    prefix: str,
    source: Scripted,
    attempts: list[int],
    *,
    skip: tuple[int, int] | None = None,
    give_up_after: int | None = None,
) -> tuple[SourceRunner, str, str]:
    keys = Keys(prefix)
    stream, cursor_key = keys.stream("out"), keys.cursor("out", "host")
    policy = RunnerConfig(
        cursor_key=cursor_key,
        ledger_key=keys.ledger("out", "host"),
        backoff=RecordingBackoff(attempts=attempts),
        skip=skip,
        give_up_after=give_up_after,
    )
    return SourceRunner(redis, source, Producer(redis, ProducerConfig(stream)), policy), stream, cursor_key


async def test_each_session_starts_from_the_cursor_written_with_its_batch(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    source = Scripted(write("10", then_fail=True), write("20"))
    runner, stream, cursor_key = runner_for(redis_client, prefix, source, [])
    with anyio.fail_after(10):
        await runner.run()
    assert source.cursors == [None, "10"]
    assert await redis_client.get(cursor_key) == b"20"
    entries = await xrange(redis_client, stream)
    assert [e[1] for e in entries] == [{b"n": b"10"}, {b"n": b"20"}]
    letters = await xrange(redis_client, dlq_key(stream))
    assert [e[1] for e in letters] == [{b"bad": b"10"}, {b"bad": b"20"}]
    stats = runner.statistics()
    assert (stats.sessions, stats.batches, stats.failures) == (2, 2, 1)


async def test_backoff_grows_until_a_session_moves_the_cursor(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    attempts: list[int] = []
    source = Scripted(
        fail(),
        fail(),
        fail(),
        write("5", then_fail=True, disconnect=True),  # progress, then a drop: at once, uncounted
        fail(),  # counted from 1 again
        fail(),
        write("6", then_fail=True),  # progress, then a failure: it counts, from 1
        write("7"),
    )
    runner, _, _ = runner_for(redis_client, prefix, source, attempts)
    with anyio.fail_after(10):
        await runner.run()
    assert attempts == [1, 2, 3, 1, 2, 1]
    assert source.cursors == [None, None, None, None, "5", "5", "5", "6"]


async def test_skip_ahead_moves_the_cursor_and_ledgers_the_range(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    attempts: list[int] = []
    await redis_client.set(Keys(prefix).cursor("out", "host"), "100")
    source = Scripted(fail(skippable=True), fail(skippable=True), fail(skippable=True), write("200"))
    runner, _, cursor_key = runner_for(redis_client, prefix, source, attempts, skip=(3, 50))
    with anyio.fail_after(10):
        assert await runner.run_pass() is True  # skipped ahead: more to do at once
        assert await redis_client.get(cursor_key) == b"150"
        assert await runner.run_pass() is False
    (skipped,) = await skipped_ranges(redis_client, Keys(prefix).ledger("out", "host"))
    assert (skipped.start, skipped.end, skipped.failures) == ("100", "150", 3)
    assert "upstream down" in skipped.reason
    assert source.cursors == ["100", "100", "100", "150"] and attempts == [1, 2]
    assert runner.statistics().skipped == 1


async def test_a_range_the_source_skips_itself_is_ledgered_with_the_cursor(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    async def cycle(cursor: str | None, out: Outlet) -> float | None:
        await out.skip_to("7", "!done", "the cursor went back")
        return None

    runner, _, cursor_key = runner_for(redis_client, prefix, Scripted(cycle), [])
    await runner.run()
    assert await redis_client.get(cursor_key) == b"!done"
    (skipped,) = await skipped_ranges(redis_client, Keys(prefix).ledger("out", "host"))
    assert (skipped.start, skipped.end, skipped.reason) == ("7", "!done", "the cursor went back")


async def test_an_unskippable_pass_is_given_up_with_its_cursor_kept(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    attempts: list[int] = []
    await redis_client.set(Keys(prefix).cursor("out", "host"), "abc")  # not numeric: never skipped
    source = Scripted(*[fail(skippable=True)] * 3, fail(permanent=True))
    runner, _, cursor_key = runner_for(redis_client, prefix, source, attempts, skip=(2, 10), give_up_after=3)
    with anyio.fail_after(10):
        assert await runner.run_pass() is False
        assert attempts == [1, 2] and runner.abandoned == 1
        assert await runner.run_pass() is False  # a permanent failure gives up at once
    assert runner.abandoned == 2 and await redis_client.get(cursor_key) == b"abc"


async def test_stop_ends_a_session_and_a_backoff_wait(redis_client: aioredis.Redis, prefix: str) -> None:
    async def forever(cursor: str | None, out: Outlet) -> float | None:
        await out.sleep(3600)
        return 3600.0

    source = Scripted(forever, forever)
    runner, _, _ = runner_for(redis_client, prefix, source, [])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await wait_until(lambda: bool(source.cursors), what="the session begun")
            runner.stop()
    assert source.interrupted == 1 and source.cursors == [None] and runner.stopped


async def test_a_pass_waits_the_pause_its_session_asked_for(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    async def pass_then_wait(cursor: str | None, out: Outlet) -> float | None:
        return 3600.0

    source = Scripted(pass_then_wait)
    runner, _, _ = runner_for(redis_client, prefix, source, [])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await wait_until(lambda: bool(source.cursors), what="the pass done")
            runner.stop()
    # A second session would have found no step left (IndexError): the runner waited instead.
    assert source.cursors == [None]


def move(cursor: str, then_fail: bool = False) -> Step:
    """A step of a source with its own sink: it wrote its data itself; only its cursor goes out."""

    async def step(_: str | None, out: Outlet) -> float | None:
        assert await out.write(SourceBatch(cursor=cursor)) == []
        if then_fail:
            raise SourceError("upstream down")
        return None

    return step


def sinkless(
    redis: aioredis.Redis, source: Scripted, attempts: list[int], give_up_after: int
) -> SourceRunner:
    """A runner without a producer or a cursor key (host discovery's listHosts)."""
    config = RunnerConfig(backoff=RecordingBackoff(attempts=attempts), give_up_after=give_up_after)
    return SourceRunner(redis, source, None, config)


async def test_without_a_cursor_key_a_pass_resumes_where_it_last_wrote_and_the_next_starts_over(
    redis_client: aioredis.Redis,
) -> None:
    attempts: list[int] = []
    source = Scripted(move("a", then_fail=True), fail(), move("b"), move("c"))
    runner = sinkless(redis_client, source, attempts, give_up_after=3)
    with anyio.fail_after(10):
        assert await runner.run_pass() is False
        assert await runner.run_pass() is False
    assert source.cursors == [None, "a", "a", None]
    assert attempts == [1, 2] and runner.abandoned == 0
    assert (runner.statistics().batches, await runner.read_cursor()) == (3, "c")


async def test_give_up_counts_the_failures_since_the_cursor_last_moved(
    redis_client: aioredis.Redis,
) -> None:
    """listHosts that fails `give_up_after` times in a row ends the pass where it got to."""
    attempts: list[int] = []
    source = Scripted(fail(), move("a", then_fail=True), fail(), fail(), move("b"))
    runner = sinkless(redis_client, source, attempts, give_up_after=3)
    with anyio.fail_after(10):
        assert await runner.run_pass() is False  # given up at "a", after 3 failures since it moved
        assert (runner.abandoned, attempts) == (1, [1, 1, 2])
        assert await runner.run_pass() is False  # the next pass starts from the beginning
    assert source.cursors == [None, None, "a", "a", None]


async def test_a_retry_after_replaces_the_backoff_delay(
    redis_client: aioredis.Redis,
) -> None:
    async def rate_limited(cursor: str | None, out: Outlet) -> float | None:
        raise SourceError("429", retry_after_s=0.01)

    attempts: list[int] = []
    runner = sinkless(redis_client, Scripted(rate_limited, fail(), move("a")), attempts, give_up_after=3)
    with anyio.fail_after(10):
        await runner.run_pass()
    assert attempts == [2]  # the first wait was the upstream's own, not the backoff's


async def test_a_source_without_a_producer_writes_only_cursors(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    cursor_key = Keys(prefix).cursor("out", "host")
    runner = SourceRunner(redis_client, Scripted(), None, RunnerConfig(cursor_key=cursor_key))
    await runner.write(SourceBatch(cursor="42"))
    assert await redis_client.get(cursor_key) == b"42"
    with pytest.raises(ValueError, match="needs a producer"):
        await runner.write(SourceBatch([{"n": "1"}], cursor="43"))
    assert await redis_client.get(cursor_key) == b"42"

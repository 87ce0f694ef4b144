"""Property: any interleaving, duplication and batching of live and snapshot events converges.

A small world of repos commits creates, updates and deletes; the firehose is followed from some
commit on (earlier commits are only known through snapshots), and each repo is backfilled once or
twice (an older snapshot may arrive after a newer one). Whatever the order, duplication and batch
split, the database must end equal to the model: records, per-collection rows, aggregates.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.indexer._db import live_pairs
from tests.indexer._events import FOLLOW, LIKE, POST, REPOST
from tests.indexer._world import DIDS, World
from workers.indexer import IndexerHandler
from workers.indexer.verify import verify

pytestmark = pytest.mark.anyio

TABLES = (
    "record",
    "actor",
    "actor_sync",
    "post",
    '"like"',
    "repost",
    "follow",
    "actor_block",
    "profile",
    "list",
    "list_item",
    "feed_generator",
    "label",
    "post_agg",
    "profile_agg",
)

steps = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 5), st.integers(0, 50)),
    min_size=1,
    max_size=24,
)


@st.composite
def scenarios(draw: Any) -> tuple[World, list[Any]]:
    """A world, and the entries the indexer receives (in delivery order, with duplicates)."""
    world = World()
    for step in draw(steps):
        world.step(*step)
    entries: list[Any] = []
    for did in DIDS:
        entries += _repo_entries(draw, world, did)
    duplicates = draw(st.lists(st.sampled_from(entries), max_size=8)) if entries else []
    return world, draw(st.permutations(entries + duplicates))


def _repo_entries(draw: Any, world: World, did: str) -> list[Any]:
    n = len(world.commits[did])
    if n == 0:
        return []
    start = draw(st.integers(0, n))  # the firehose is followed from this commit on
    out = world.live_entries(did, start)
    if start > 0 or draw(st.booleans()):
        # The snapshot must cover the commits the firehose missed.
        at = draw(st.integers(max(start - 1, 0), n - 1))
        out += world.snapshot_entries(did, at)
        if at > 0 and draw(st.booleans()):
            out += world.snapshot_entries(did, draw(st.integers(0, at - 1)))  # an older re-backfill
    return out


def _batches(entries: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = sorted({c % (len(entries) + 1) for c in cuts} | {0, len(entries)})
    return [entries[a:b] for a, b in itertools.pairwise(bounds) if b > a]


async def _reset(pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute(";".join(f"DELETE FROM {t}" for t in TABLES))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios(), cuts=st.lists(st.integers(0, 400), max_size=10))
async def test_any_interleaving_converges_to_the_truth(pool: Any, scenario: Any, cuts: list[int]) -> None:
    world, entries = scenario
    await _reset(pool)
    handler = IndexerHandler(pool)
    for batch in _batches(entries, cuts):
        outcomes = await handler(batch)
        assert all(type(o).__name__ == "Done" for o in outcomes), outcomes

    verdict = await verify(pool, world.truth())
    assert verdict.ok, verdict.to_json()
    assert verdict.indexed == verdict.expected == len(world.truth())
    assert await live_pairs(pool, "post", POST, "reply_parent") == world.table(POST, "parent")
    assert await live_pairs(pool, '"like"', LIKE, "subject") == world.table(LIKE, "subject")
    assert await live_pairs(pool, "repost", REPOST, "subject") == world.table(REPOST, "subject")
    assert await live_pairs(pool, "follow", FOLLOW, "subject_did") == world.table(FOLLOW, "subject")
    async with pool.acquire() as conn:
        post_agg = await _aggs(conn, "post_agg", "uri", "like_count, repost_count, reply_count")
        assert post_agg == world.post_agg()
        assert await _aggs(conn, "profile_agg", "did", "followers_count, follows_count, posts_count") == (
            world.profile_agg()
        )


async def _aggs(conn: Any, table: str, key: str, columns: str) -> dict[str, tuple[int, ...]]:
    rows = await conn.fetch(f"SELECT {key}, {columns} FROM {table}")
    return {r[0]: tuple(r[1:]) for r in rows if any(r[1:])}


@pytest.mark.parametrize("seed", range(4))
async def test_concurrent_replicas_converge(pool: Any, seed: int) -> None:
    """Three handlers (replicas) apply disjoint shares of a shuffled history at the same time."""
    rng = random.Random(seed)
    world = World()
    for _ in range(60):
        world.step(rng.randrange(3), rng.randrange(5), rng.randrange(6), rng.randrange(50))
    entries: list[Any] = []
    for did in DIDS:
        n = len(world.commits[did])
        if n == 0:
            continue
        start = rng.randrange(n + 1)
        entries += world.live_entries(did, start) + world.snapshot_entries(did, max(start - 1, 0))
        entries += world.snapshot_entries(did, rng.randrange(n))
    entries += rng.sample(entries, len(entries) // 4)
    rng.shuffle(entries)

    async def replica(share: list[Any]) -> None:
        handler = IndexerHandler(pool)
        for i in range(0, len(share), 7):
            outcomes = await handler(share[i : i + 7])
            assert all(type(o).__name__ == "Done" for o in outcomes), outcomes

    async with anyio.create_task_group() as tg:
        for r in range(3):
            tg.start_soon(replica, entries[r::3])
    verdict = await verify(pool, world.truth())
    assert verdict.ok, verdict.to_json()

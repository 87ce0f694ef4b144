"""The indexer's rules, one edge case at a time, against real PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from schemas import Account, Label
from streams import DONE, DeadLetter, Done
from tests.indexer._db import live_uris, record_row
from tests.indexer._events import (
    BACKFILL,
    FOLLOW,
    LABELS,
    LIKE,
    LIVE,
    POST,
    account,
    body,
    create,
    delete,
    entry,
    labels,
    marker,
    tid,
    uri,
)
from workers.indexer import IndexerHandler
from workers.indexer.verify import aggregates_match, verify

pytestmark = pytest.mark.anyio

A, B = "did:plc:alice", "did:plc:bob"
P1 = uri(A, POST, "p1")
P2 = uri(A, POST, "p2")


async def run(pool: Any, *messages: Any, stream: str = LIVE) -> list[Any]:
    """Apply each message as its own batch, in order; every outcome must be Done."""
    handler = IndexerHandler(pool)
    for m in messages:
        outcomes = await handler([entry(stream, m)])
        assert outcomes == [DONE], outcomes
    return []


async def row(pool: Any, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow(sql, *args)


async def test_delete_before_create_cannot_be_resurrected_by_an_older_backfill(pool: Any) -> None:
    await run(pool, delete(B, LIKE, "l1", tid(5)))
    await run(pool, create(B, LIKE, "l1", tid(3), "c1", body(LIKE, subject=P1), seq=-1), stream=BACKFILL)
    rec = await record_row(pool, uri(B, LIKE, "l1"), "tombstone, rev, subject")
    assert (rec["tombstone"], rec["rev"], rec["subject"]) == (True, tid(5), None)
    assert await row(pool, "SELECT * FROM post_agg WHERE like_count <> 0") is None


async def test_a_newer_create_after_a_delete_is_applied(pool: Any) -> None:
    await run(pool, delete(B, LIKE, "l1", tid(5)))
    await run(pool, create(B, LIKE, "l1", tid(6), "c2", body(LIKE, subject=P1)))
    assert (await row(pool, "SELECT like_count FROM post_agg WHERE uri = $1", P1))[0] == 1


async def test_updates_in_reverse_order_keep_the_newest_and_move_the_aggregate(pool: Any) -> None:
    newer = create(B, LIKE, "l1", tid(7), "c7", body(LIKE, subject=P2), update=True)
    older = create(B, LIKE, "l1", tid(5), "c5", body(LIKE, subject=P1))
    await run(pool, newer, older, newer)
    assert (await record_row(pool, uri(B, LIKE, "l1"), "cid, subject"))[:] == ("c7", P2)
    counts = await row(
        pool,
        "SELECT (SELECT like_count FROM post_agg WHERE uri = $1) AS p2, "
        "(SELECT like_count FROM post_agg WHERE uri = $2) AS p1",
        P2,
        P1,
    )
    assert (counts["p2"], counts["p1"]) == (1, None)


async def test_same_batch_collapse_equals_one_by_one(pool: Any) -> None:
    events = [
        create(B, FOLLOW, "f1", tid(1), "c1", body(FOLLOW, subject=A)),
        delete(B, FOLLOW, "f1", tid(2)),
        create(B, FOLLOW, "f1", tid(3), "c3", body(FOLLOW, subject=A)),
        delete(B, FOLLOW, "f2", tid(4)),
        create(B, FOLLOW, "f2", tid(2), "c2", body(FOLLOW, subject=A)),
    ]
    assert await IndexerHandler(pool)([entry(LIVE, e) for e in events]) == [DONE] * 5
    assert await live_uris(pool) == {uri(B, FOLLOW, "f1")}
    agg = await row(pool, "SELECT followers_count FROM profile_agg WHERE did = $1", A)
    assert agg[0] == 1


async def test_marker_tombstones_records_deleted_before_the_firehose(pool: Any) -> None:
    # An old snapshot at rev 3 had p1 and p2; p1 was deleted before we followed the firehose.
    old = [create(A, POST, k, tid(3), f"c{k}", body(POST), seq=-1) for k in ("p1", "p2")]
    await run(pool, *old, marker(A, tid(3)), stream=BACKFILL)
    # The new snapshot at rev 9 only has p2; its marker is processed before p2's create.
    await run(
        pool, marker(A, tid(9)), create(A, POST, "p2", tid(9), "cp2", body(POST), seq=-1), stream=BACKFILL
    )
    assert await live_uris(pool) == {P2}
    assert (await record_row(pool, P1, "rev, tombstone"))[:] == (tid(9), True)
    assert (await row(pool, "SELECT posts_count FROM profile_agg WHERE did = $1", A))[0] == 1
    assert (await row(pool, "SELECT repo_rev FROM actor_sync WHERE did = $1", A))[0] == tid(9)


async def test_an_older_snapshot_arriving_after_a_newer_marker_resurrects_nothing(pool: Any) -> None:
    await run(pool, marker(A, tid(9)), stream=BACKFILL)
    old = create(A, POST, "p1", tid(3), "c1", body(POST), seq=-1)
    await run(pool, old, marker(A, tid(3)), stream=BACKFILL)
    assert await live_uris(pool) == set()
    assert (await row(pool, "SELECT repo_rev FROM actor_sync WHERE did = $1", A))[0] == tid(9)
    # A live write newer than the snapshot still goes through.
    await run(pool, create(A, POST, "p1", tid(10), "c10", body(POST)))
    assert await live_uris(pool) == {P1}


async def test_labels_negation_and_out_of_order_cts(pool: Any) -> None:
    src, subject = "did:plc:labeler", P1

    def lab(cts: str, neg: bool = False, val: str = "spam", exp: str | None = None) -> Label:
        return Label(src=src, uri=subject, val=val, cts=cts, neg=neg, exp=exp)

    await run(pool, labels(lab("2024-01-02T00:00:00Z", neg=True)), stream=LABELS)
    await run(pool, labels(lab("2024-01-01T00:00:00Z")), stream=LABELS)  # older: stays negated
    neg = await row(pool, "SELECT neg FROM label WHERE val = 'spam'")
    assert neg[0] is True
    await run(pool, labels(lab("2024-01-02T00:00:00+00:00")), stream=LABELS)  # same instant: neg wins
    assert (await row(pool, "SELECT neg FROM label WHERE val = 'spam'"))[0] is True
    await run(
        pool,
        labels(
            lab("2024-01-03T00:00:00Z"), lab("2024-01-01T00:00:00Z", val="old", exp="2024-01-02T00:00:00Z")
        ),
        stream=LABELS,
    )
    truth = [{"type": "label", "src": src, "uri": subject, "val": "spam", "cts": "2024-01-03T00:00:00Z"}]
    verdict = await verify(pool, truth)
    assert (verdict.labels_indexed, verdict.labels_missing, verdict.labels_extra) == (1, 0, 0)


async def test_one_bad_entry_is_dead_lettered_and_the_rest_committed(pool: Any) -> None:
    like = body(LIKE, subject=P1)
    good = [entry(LIVE, create(B, LIKE, f"l{i}", tid(i), f"c{i}", like)) for i in range(1, 8)]
    no_text = entry(LIVE, create(B, POST, "bad", tid(20), "cb", {"$type": POST}))  # CHECK
    nul = entry(LIVE, create(B, POST, "nul", tid(21), "cn", {"$type": POST, "text": "a\u0000b"}))  # jsonb
    garbage = type(good[0])(LIVE, "99-0", {b"event": b"{not json"})
    no_subject = entry(LIVE, create(B, LIKE, "bad", tid(22), "cs", {"$type": LIKE}))  # read in Python
    batch = [*good[:3], no_text, *good[3:5], nul, garbage, no_subject, *good[5:]]
    outcomes = await IndexerHandler(pool)(batch)
    dead = {i for i, o in enumerate(outcomes) if isinstance(o, DeadLetter)}
    assert dead == {3, 6, 7, 8}, outcomes
    assert all(isinstance(outcomes[i], Done) for i in set(range(len(batch))) - dead)
    assert [o.reason for o in outcomes if isinstance(o, DeadLetter)] == [
        "rejected_by_database",
        "rejected_by_database",
        "invalid_entry",
        "invalid_entry",
    ]
    assert (await row(pool, "SELECT like_count FROM post_agg WHERE uri = $1", P1))[0] == 7
    assert await live_uris(pool) == {uri(B, LIKE, f"l{i}") for i in range(1, 8)}


async def test_account_status_is_gated_on_seq_and_inactive_records_are_not_counted(pool: Any) -> None:
    await run(pool, create(B, POST, "p", tid(1), "c1", body(POST)), account(B, 10, False, "takendown"))
    await run(pool, account(B, 5, True))  # older: ignored
    actor = await row(pool, "SELECT active, status FROM actor WHERE did = $1", B)
    assert (actor["active"], actor["status"]) == (False, "takendown")
    verdict = await verify(pool, [])
    assert (verdict.indexed, verdict.extra, verdict.ok) == (0, 0, True)
    await run(pool, account(B, 11, True))
    assert (await verify(pool, [])).extra == 1


async def test_replaying_everything_changes_nothing(pool: Any) -> None:
    events = [
        create(A, POST, "p1", tid(1), "c1", body(POST)),
        create(B, POST, "r1", tid(2), "c2", body(POST, parent=P1)),
        create(B, LIKE, "l1", tid(3), "c3", body(LIKE, subject=P1)),
        delete(B, LIKE, "l1", tid(4)),
        create(B, FOLLOW, "f1", tid(5), "c5", body(FOLLOW, subject=A)),
    ]
    handler = IndexerHandler(pool)
    for _ in range(3):
        assert await handler([entry(LIVE, e) for e in events]) == [DONE] * len(events)
    agg = await row(pool, "SELECT like_count, reply_count FROM post_agg WHERE uri = $1", P1)
    assert (agg[0], agg[1]) == (0, 1)
    async with pool.acquire() as conn:
        assert await aggregates_match(conn)


async def test_a_uri_too_long_for_an_index_is_dead_lettered_alone(pool: Any) -> None:
    # Longer than a btree entry may be, even compressed (SQLSTATE 54000): a hostile relay can send it.
    long_did = "did:web:" + "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(400))
    like = body(LIKE, subject=P1)
    good = [entry(LIVE, create(B, LIKE, f"k{i}", tid(i), f"c{i}", like)) for i in range(1, 5)]
    huge = entry(LIVE, create(long_did, LIKE, "x", tid(9), "cx", like))
    outcomes = await IndexerHandler(pool)([*good[:2], huge, *good[2:]])
    assert [type(o).__name__ for o in outcomes] == ["Done", "Done", "DeadLetter", "Done", "Done"]
    letter = outcomes[2]
    assert isinstance(letter, DeadLetter) and letter.reason == "rejected_by_database"
    assert await live_uris(pool) == {uri(B, LIKE, f"k{i}") for i in range(1, 5)}


async def test_a_deleted_account_is_tombstoned_and_a_deactivated_one_only_hidden(pool: Any) -> None:
    like, follow = uri(B, LIKE, "l1"), uri(B, FOLLOW, "f1")
    await run(
        pool,
        create(A, POST, "p1", tid(3), "c1", body(POST)),
        create(B, LIKE, "l1", tid(4), "c2", body(LIKE, subject=P1)),
        create(B, FOLLOW, "f1", tid(4), "c3", body(FOLLOW, subject=A)),
    )
    deactivated = Account(seq=8, did=B, active=False, status="deactivated", time="2025-01-01T00:00:00.000Z")
    await run(pool, deactivated)
    assert {like, follow} <= await live_uris(pool)  # hidden from readers by actor.active, kept
    deleted = Account(seq=9, did=B, active=False, status="deleted", time="2025-01-01T00:00:01.000Z")
    await run(pool, deleted)
    assert (await record_row(pool, like, "tombstone"))["tombstone"]
    assert (await record_row(pool, follow, "tombstone"))["tombstone"]
    assert P1 in await live_uris(pool)
    assert await row(pool, "SELECT * FROM post_agg WHERE like_count <> 0") is None
    async with pool.acquire() as conn:
        assert await aggregates_match(conn)
    # A later commit (a rev after the deletion: the DID came back) is written again.
    await run(pool, create(B, LIKE, "l2", "3zzzzzzzzzzzz", "c4", body(LIKE, subject=P1)))
    assert uri(B, LIKE, "l2") in await live_uris(pool)

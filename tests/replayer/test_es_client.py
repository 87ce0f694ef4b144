"""The Elasticsearch client's reading of answers no well-behaved server gives: never a false success."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import msgspec
import pytest

from schemas import CaptainsLogDoc
from workers.replayer.es import ElasticClient, EsRejected, EsUnavailable, Verdict, chunks, judge, ndjson

pytestmark = pytest.mark.anyio


def _doc(i: int, body: bytes = b'{"trace_id":"x"}') -> CaptainsLogDoc:
    return CaptainsLogDoc(
        kind="capture",
        doc_id=f"d{i}",
        index="agent-captains-captures-2026-02-22",
        path=f"captures/2026-02-22/d{i}.json",
        body=msgspec.Raw(body),
    )


async def _bulk_against(answer: Callable[[httpx.Request], httpx.Response], n: int = 2) -> list[Verdict]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        items = await ElasticClient(http, "http://es.invalid").bulk([_doc(i) for i in range(n)])
    return [i.verdict for i in items]


async def test_a_bulk_answer_with_the_wrong_number_of_items_is_never_success() -> None:
    with pytest.raises(EsRejected) as err:
        await _bulk_against(
            lambda r: httpx.Response(200, json={"errors": False, "items": [{"index": {"status": 201}}]})
        )
    assert err.value.status == 502  # a counted retry for every document


async def test_items_without_a_status_or_malformed_are_retried() -> None:
    verdicts = await _bulk_against(
        lambda r: httpx.Response(200, json={"errors": False, "items": [{"index": {"status": "ok"}}, "junk"]})
    )
    assert verdicts == [Verdict.RETRY, Verdict.RETRY]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy login</html>"),
        httpx.Response(
            503, json={"error": {"type": "cluster_block_exception", "reason": "blocked"}, "status": 503}
        ),
        httpx.Response(429, json={"error": {"type": "es_rejected_execution_exception", "reason": "busy"}}),
    ],
)
async def test_non_answers_and_whole_request_overload_mean_unavailable(response: httpx.Response) -> None:
    with pytest.raises(EsUnavailable):
        await _bulk_against(lambda r: response)


async def test_the_request_is_ndjson_with_explicit_ids_and_a_final_newline() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"errors": False, "items": [{"index": {"status": 201, "_version": 1}}] * 2}
        )

    assert await _bulk_against(answer) == [Verdict.INDEXED, Verdict.INDEXED]
    (request,) = seen
    assert request.headers["content-type"] == "application/x-ndjson"
    lines = request.content.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    assert json.loads(lines[0]) == {"index": {"_index": "agent-captains-captures-2026-02-22", "_id": "d0"}}


def test_chunks_bound_count_and_bytes_but_send_an_oversized_document_alone() -> None:
    docs = [_doc(i, b'{"x":"' + b"a" * 300 + b'"}') for i in range(10)]
    assert [len(c) for c in chunks(docs, max_docs=4, max_bytes=10_000)] == [4, 4, 2]
    assert [len(c) for c in chunks(docs, max_docs=100, max_bytes=800)] == [2, 2, 2, 2, 2]
    assert [len(c) for c in chunks(docs, max_docs=100, max_bytes=10)] == [1] * 10
    assert len(ndjson(docs[:1]).splitlines()) == 2


def test_verdicts_per_item_status() -> None:
    assert [judge(s) for s in (200, 201, 400, 413, 429, 503, 500, 404, 409)] == [
        Verdict.INDEXED, Verdict.INDEXED, Verdict.REJECTED, Verdict.REJECTED,
        Verdict.BUSY, Verdict.BUSY, Verdict.RETRY, Verdict.RETRY, Verdict.RETRY,
    ]  # fmt: skip

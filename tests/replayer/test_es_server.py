"""The fake Elasticsearch itself, over real HTTP: the ES 8 semantics the replayer's tests rely on."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.replayer._es_server import FakeElasticsearch

PROJECT = Path(__file__).resolve().parents[2]
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def server() -> Iterator[FakeElasticsearch]:
    """A server without periodic refresh: only explicit refreshes make writes countable."""
    with FakeElasticsearch(refresh_interval_s=None) as es:
        yield es


@pytest.fixture
def client(server: FakeElasticsearch) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def ndjson(*lines: Any) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def bulk(client: httpx.Client, *lines: Any, path: str = "/_bulk", **params: str) -> dict[str, Any]:
    response = client.post(path, content=ndjson(*lines), headers=NDJSON, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def items(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [next(iter(entry.items())) for entry in body["items"]]


def index(doc_id: str, source: Any, idx: str = "logs") -> list[Any]:
    return [{"index": {"_index": idx, "_id": doc_id}}, source]


def count(client: httpx.Client, target: str = "") -> int:
    response = client.get(f"{target}/_count")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def assert_envelope(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    """ES's whole-request error layout; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["error"]["type"] == error_type
    assert body["error"]["root_cause"][0]["type"] == error_type
    assert body["error"]["root_cause"][0]["reason"] == body["error"]["reason"]
    error: dict[str, Any] = body["error"]
    return error


# -- cluster info -----------------------------------------------------------------------------------


def test_root_and_health_answer_like_es_8(client: httpx.Client) -> None:
    root = client.get("/")
    assert root.headers["X-elastic-product"] == "Elasticsearch"
    assert root.headers["Content-Type"] == "application/json"
    info = root.json()
    assert info["version"]["number"] == "8.15.0"
    assert info["tagline"] == "You Know, for Search"
    assert {"name", "cluster_name", "cluster_uuid"} <= info.keys()
    head = client.head("/")
    assert (head.status_code, head.content) == (200, b"")
    health = client.get("/_cluster/health", params={"wait_for_status": "green"}).json()
    assert (health["status"], health["timed_out"], health["number_of_nodes"]) == ("green", False, 1)
    vendor = client.get("/", headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=8"})
    assert vendor.headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=8"


def test_unknown_routes_methods_params_and_content_types_are_refused_as_es_does(client: httpx.Client) -> None:
    nope = client.get("/_nope/x")
    assert (nope.status_code, nope.json()) == (
        400,
        {"error": "no handler found for uri [/_nope/x] and method [GET]"},
    )
    wrong = client.get("/_bulk")
    assert wrong.status_code == 405
    assert wrong.json() == {
        "error": "Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [POST, PUT]",
        "status": 405,
    }
    unrecognized = client.post(
        "/_bulk", params={"bogus": "1"}, content=ndjson(*index("1", {})), headers=NDJSON
    )
    reason = assert_envelope(unrecognized, 400, "illegal_argument_exception")["reason"]
    assert reason == "request [/_bulk] contains unrecognized parameter: [bogus]"
    untyped = client.post("/_bulk", content=ndjson(*index("1", {})))  # httpx sends no Content-Type
    assert (untyped.status_code, untyped.json()["error"]) == (406, "Content-Type header [] is not supported")
    client.post("/_refresh")
    assert count(client) == 0, "nothing of a refused request is applied"


# -- bulk --------------------------------------------------------------------------------------------


def test_reindexing_replaces_the_document_raising_version_not_count(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    first = items(bulk(client, *index("a", {"n": 1}), *index("b", {"n": 2})))
    assert [(action, r["result"], r["status"], r["_version"]) for action, r in first] == [
        ("index", "created", 201, 1),
        ("index", "created", 201, 1),
    ]
    assert first[0][1]["_shards"] == {"total": 1, "successful": 1, "failed": 0}
    assert first[0][1]["_primary_term"] == 1
    again = items(bulk(client, *index("a", {"n": 10}), *index("a", {"n": 11})))
    assert [(r["result"], r["status"], r["_version"]) for _, r in again] == [
        ("updated", 200, 2),
        ("updated", 200, 3),
    ]
    seq_nos = [r["_seq_no"] for _, r in first + again]
    assert seq_nos == sorted(seq_nos) and len(set(seq_nos)) == 4
    client.post("/logs/_refresh")
    assert count(client, "/logs") == 2
    assert (server.doc("logs", "a"), server.version("logs", "a"), server.count()) == ({"n": 11}, 3, 2)
    got = client.get("/logs/_doc/a").json()
    assert got == {
        "_index": "logs",
        "_id": "a",
        "_version": 3,
        "_seq_no": seq_nos[-1],
        "_primary_term": 1,
        "found": True,
        "_source": {"n": 11},
    }


def test_errors_flag_and_per_item_statuses_on_mixed_results(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    bulk(client, *index("taken", {"n": 1}))
    body = bulk(
        client,
        *index("ok", {"n": 2}),
        {"create": {"_index": "logs", "_id": "taken"}},
        {"n": 3},
        {"delete": {"_index": "logs", "_id": "never"}},
        {"index": {"_index": "Logs", "_id": "x"}},
        {"n": 4},
        *index("list", [1, 2]),
        {"delete": {"_index": "logs", "_id": "ok"}},
    )
    assert body["errors"] is True
    assert isinstance(body["took"], int)
    results = items(body)
    assert [(action, r["status"]) for action, r in results] == [
        ("index", 201),
        ("create", 409),
        ("delete", 404),
        ("index", 400),
        ("index", 400),
        ("delete", 200),
    ]
    conflict = results[1][1]["error"]
    assert conflict["type"] == "version_conflict_engine_exception"
    assert conflict["reason"] == "[taken]: version conflict, document already exists (current version [1])"
    assert (conflict["index"], conflict["shard"]) == ("logs", "0")
    assert results[2][1]["result"] == "not_found" and "error" not in results[2][1]
    assert results[3][1]["error"] == {
        "type": "invalid_index_name_exception",
        "reason": "Invalid index name [Logs], must be lowercase",
        "index_uuid": "_na_",
        "index": "Logs",
    }
    assert results[4][1]["error"]["type"] == "document_parsing_exception"
    assert results[4][1]["error"]["reason"] == "[1:1] Malformed content, must start with an object"
    assert results[5][1]["result"] == "deleted"
    assert server.doc("logs", "taken") == {"n": 1} and server.doc("logs", "ok") is None
    assert bulk(client, *index("fine", {"n": 5}))["errors"] is False


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("_under", "must not start with '_', '-', or '+'"),
        ("-dash", "must not start with '_', '-', or '+'"),
        ("has space", "must not contain the following characters"),
        ("a*b", "must not contain the following characters"),
        ("a,b", "must not contain the following characters"),
        ("hash#tag", "must not contain '#'"),
        ("UPPER", "must be lowercase"),
    ],
)
def test_invalid_index_names_fail_the_item(client: httpx.Client, name: str, problem: str) -> None:
    ((_, result),) = items(bulk(client, *index("1", {}, idx=name)))
    assert result["status"] == 400
    assert result["error"]["type"] == "invalid_index_name_exception"
    assert result["error"]["reason"].startswith(f"Invalid index name [{name}], {problem}")


def test_auto_generated_ids_and_the_default_index_of_the_path(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    results = items(bulk(client, {"index": {}}, {"n": 1}, {"create": {}}, {"n": 2}, path="/from-path/_bulk"))
    ids = [r["_id"] for _, r in results]
    assert [r["_index"] for _, r in results] == ["from-path", "from-path"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{20}", i) for i in ids) and ids[0] != ids[1]
    assert server.doc("from-path", ids[1]) == {"n": 2}
    assert server.indices() == ["from-path"]


def test_create_on_an_existing_id_is_a_conflict_and_leaves_the_document(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    create = {"create": {"_index": "logs", "_id": "1"}}
    assert items(bulk(client, create, {"v": "first"}))[0][1]["status"] == 201
    ((_, result),) = items(bulk(client, create, {"v": "second"}))
    assert (result["status"], result["error"]["type"]) == (409, "version_conflict_engine_exception")
    assert (server.doc("logs", "1"), server.version("logs", "1")) == ({"v": "first"}, 1)


def test_update_merges_upserts_and_detects_noops(server: FakeElasticsearch, client: httpx.Client) -> None:
    def update(body: dict[str, Any]) -> dict[str, Any]:
        return items(bulk(client, {"update": {"_index": "logs", "_id": "u"}}, body))[0][1]

    missing = update({"doc": {"a": 1}})
    assert (missing["status"], missing["error"]["type"]) == (404, "document_missing_exception")
    assert (update({"doc": {"a": {"x": 1}}, "doc_as_upsert": True})["result"]) == "created"
    merged = update({"doc": {"a": {"y": 2}, "b": 3}})
    assert (merged["result"], merged["_version"]) == ("updated", 2)
    assert server.doc("logs", "u") == {"a": {"x": 1, "y": 2}, "b": 3}
    noop = update({"doc": {"b": 3}})
    assert (noop["result"], noop["status"], noop["_version"]) == ("noop", 200, 2)
    scripted = update({"script": {"source": "ctx._source.b++"}})
    assert scripted["status"] == 400


def test_optimistic_concurrency_and_external_versions(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    ((_, first),) = items(bulk(client, *index("d", {"n": 1})))
    stale = {"index": {"_index": "logs", "_id": "d", "if_seq_no": first["_seq_no"] + 5, "if_primary_term": 1}}
    assert items(bulk(client, stale, {"n": 2}))[0][1]["status"] == 409
    fresh = {"index": {"_index": "logs", "_id": "d", "if_seq_no": first["_seq_no"], "if_primary_term": 1}}
    assert items(bulk(client, fresh, {"n": 3}))[0][1]["_version"] == 2

    def external(version: int, n: int) -> dict[str, Any]:
        meta = {"index": {"_index": "ext", "_id": "e", "version": version, "version_type": "external"}}
        return items(bulk(client, meta, {"n": n}))[0][1]

    assert external(10, 1)["_version"] == 10
    older = external(9, 2)
    assert (older["status"], older["error"]["reason"]) == (
        409,
        "[e]: version conflict, current version [10] is higher or equal to the one provided [9]",
    )
    assert external(11, 3)["_version"] == 11
    assert (server.doc("ext", "e"), server.doc("logs", "d")) == ({"n": 3}, {"n": 3})


def test_a_body_without_a_final_newline_is_refused_whole(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    response = client.post("/_bulk", content=ndjson(*index("1", {"n": 1})).rstrip("\n"), headers=NDJSON)
    error = assert_envelope(response, 400, "illegal_argument_exception")
    assert error["reason"] == "The bulk request must be terminated by a newline [\\n]"
    assert server.count() == 0


@pytest.mark.parametrize(
    ("action_line", "error_type", "reason"),
    [
        ("not json", "x_content_parse_exception", r"^\[3:1\] "),
        (
            '{"upsert": {"_index": "logs"}}',
            "illegal_argument_exception",
            r"^Malformed action/metadata line \[3\], expected one of \[create, delete, index, update\] "
            r"but found \[upsert\]$",
        ),
        (
            '{"index": {"_id": "9"}}',
            "action_request_validation_exception",
            r"^Validation Failed: 1: index is missing;$",
        ),
        (
            '{"index": {"_index": "logs", "_id": ""}}',
            "action_request_validation_exception",
            r"^Validation Failed: 1: if _id is specified it must not be empty;$",
        ),
        (
            '{"index": {"_index": "logs", "_type": "_doc"}}',
            "illegal_argument_exception",
            r"^Action/metadata line \[3\] contains an unknown parameter \[_type\]$",
        ),
        (
            "[1]",
            "illegal_argument_exception",
            r"^Malformed action/metadata line \[3\], expected START_OBJECT but found \[START_ARRAY\]$",
        ),
    ],
)
def test_a_malformed_action_line_fails_the_whole_request(
    server: FakeElasticsearch, client: httpx.Client, action_line: str, error_type: str, reason: str
) -> None:
    valid = ndjson(*index("ok", {"n": 1}))
    body = valid + action_line + "\n" + json.dumps({"n": 2}) + "\n"
    error = assert_envelope(client.post("/_bulk", content=body, headers=NDJSON), 400, error_type)
    assert re.search(reason, error["reason"]), error["reason"]
    assert server.count() == 0, "nothing of a refused request is applied"


def test_dynamic_mapping_fixes_a_fields_type_on_first_sight(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    bulk(client, *index("1", {"n": 1, "s": "text", "o": {"x": 1}, "b": True, "at": "2026-02-22T10:00:00Z"}))
    results = items(
        bulk(
            client,
            *index("2", {"n": "abc"}),
            *index("3", {"n": "42", "s": 7, "b": "false"}),  # coerced, as ES does
            *index("4", {"s": {"nested": 1}}),
            *index("5", {"o": "flat"}),
            *index("6", {"at": "yesterday"}),
            *index("7", {"new": 1.5}),
            *index("8", {"new": "x"}),  # the first item of a request fixes it too
        )
    )
    assert [r["status"] for _, r in results] == [400, 201, 400, 400, 400, 201, 400]
    long_error = results[0][1]["error"]
    assert long_error["type"] == "document_parsing_exception"
    assert long_error["reason"] == (
        "[1:7] failed to parse field [n] of type [long] in document with id '2'. "
        "Preview of field's value: 'abc'"
    )
    assert long_error["caused_by"]["type"] == "illegal_argument_exception"
    assert "of type [text]" in results[2][1]["error"]["reason"]
    assert "Preview of field's value: '{nested=1}'" in results[2][1]["error"]["reason"]
    assert "object mapping for [o] tried to parse field [o] as object" in results[3][1]["error"]["reason"]
    assert "of type [date]" in results[4][1]["error"]["reason"]
    assert "of type [float]" in results[6][1]["error"]["reason"]
    assert [server.doc("logs", i) is not None for i in "1234567"] == [
        True,
        False,
        True,
        False,
        False,
        False,
        True,
    ]


def test_count_is_near_real_time_and_get_is_realtime(client: httpx.Client) -> None:
    bulk(client, *index("1", {"n": 1}), *index("2", {"n": 2}))
    assert client.get("/logs/_doc/2").json()["found"] is True
    assert count(client, "/logs") == 0
    assert client.post("/logs/_refresh").json()["_shards"] == {"total": 1, "successful": 1, "failed": 0}
    assert count(client, "/logs") == 2
    bulk(client, {"delete": {"_index": "logs", "_id": "1"}})
    assert client.get("/logs/_doc/1").status_code == 404
    assert count(client, "/logs") == 2, "a delete is not visible before a refresh either"
    refreshed = items(bulk(client, *index("3", {"n": 3}), refresh="true"))
    assert refreshed[0][1]["forced_refresh"] is True
    assert count(client, "/logs") == 2
    bulk(client, *index("4", {"n": 4}), refresh="wait_for")
    assert count(client, "/logs") == 3


def test_periodic_refresh_makes_writes_countable() -> None:
    with FakeElasticsearch(refresh_interval_s=0.1) as es, httpx.Client(base_url=es.url) as c:
        bulk(c, *index("1", {"n": 1}))
        deadline = time.monotonic() + 5
        while count(c) == 0:
            assert time.monotonic() < deadline, "the periodic refresh never ran"
            time.sleep(0.02)


def test_count_accepts_lists_and_wildcards(client: httpx.Client) -> None:
    bulk(
        client,
        *index("1", {}, "agent-captains-a"),
        *index("2", {}, "agent-captains-a"),
        *index("3", {}, "agent-captains-b"),
        *index("4", {}, "other"),
        refresh="true",
    )
    assert count(client, "/agent-captains-*") == 3
    assert count(client, "/agent-captains-b,other") == 2
    assert count(client, "/agent-captains-*,other") == 4
    assert count(client) == 4 and count(client, "/_all") == 4
    assert count(client, "/nothing-*") == 0
    missing = assert_envelope(
        client.get("/agent-captains-a,missing/_count"), 404, "index_not_found_exception"
    )
    assert (missing["reason"], missing["index"]) == ("no such index [missing]", "missing")
    assert client.post("/agent-captains-*/_count", json={"query": {"match_all": {}}}).json()["count"] == 3
    term = client.post("/other/_count", json={"query": {"term": {"n": 1}}})
    assert term.status_code == 400, "queries are not implemented, and not silently ignored"


def test_get_of_a_missing_document_or_index(client: httpx.Client) -> None:
    bulk(client, *index("1", {}))
    missing = client.get("/logs/_doc/2")
    assert (missing.status_code, missing.json()) == (404, {"_index": "logs", "_id": "2", "found": False})
    error = assert_envelope(client.get("/nope/_doc/1"), 404, "index_not_found_exception")
    assert error["reason"] == "no such index [nope]"


def test_cat_indices(server: FakeElasticsearch, client: httpx.Client) -> None:
    bulk(client, *index("1", {}, "b-index"), *index("2", {}, "a-index"), refresh="true")
    rows = client.get("/_cat/indices", params={"format": "json"}).json()
    assert [(r["index"], r["health"], r["docs.count"]) for r in rows] == [
        ("a-index", "green", "1"),
        ("b-index", "green", "1"),
    ]
    assert server.indices() == ["a-index", "b-index"]


# -- faults -----------------------------------------------------------------------------------------


def test_down_refuses_connections_and_up_restores_the_same_port(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    bulk(client, *index("1", {"n": 1}))
    port = server.port
    server.down()
    with pytest.raises(httpx.ConnectError):
        client.get("/")  # the pooled keep-alive connection was reset too
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
    server.up()
    assert server.port == port
    assert client.get("/logs/_doc/1").json()["_source"] == {"n": 1}


def test_fail_requests_answers_whole_bulk_requests_with_the_status(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    server.fail_requests(429, times=2)
    body = ndjson(*index("1", {"n": 1}))
    for _ in range(2):
        rejected = client.post("/_bulk", content=body, headers=NDJSON)
        error = assert_envelope(rejected, 429, "es_rejected_execution_exception")
        assert error["reason"].startswith("rejected execution of coordinating operation")
        assert "Retry-After" not in rejected.headers
    assert client.get("/").status_code == 200, "only _bulk requests fail by default"
    assert server.doc("logs", "1") is None
    assert client.post("/_bulk", content=body, headers=NDJSON).status_code == 200
    assert server.bulk_requests == [(1, len(body))] * 3
    assert server.attempts("logs", "1") == 3
    server.fail_requests(503, path="*")
    assert_envelope(client.get("/"), 503, "cluster_block_exception")
    assert client.get("/").status_code == 200


def test_fail_items_fails_matching_items_and_applies_the_rest(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    server.fail_items(429, times=2, match=lambda idx, doc_id: doc_id.startswith("bad"))
    server.fail_items(503, times=1)
    lines = [
        *index("ok-1", {}),
        *index("bad-1", {}),
        *index("bad-2", {}),
        *index("ok-2", {}),
        *index("bad-3", {}),
    ]
    body = bulk(client, *lines)
    assert body["errors"] is True
    assert [r["status"] for _, r in items(body)] == [503, 429, 429, 201, 201]
    assert items(body)[1][1]["error"]["type"] == "es_rejected_execution_exception"
    assert items(body)[0][1]["error"]["type"] == "unavailable_shards_exception"
    assert [server.doc("logs", i) is not None for i in ("ok-1", "bad-1", "bad-2", "ok-2", "bad-3")] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert bulk(client, *lines)["errors"] is False, "the faults were used up"
    assert server.attempts("logs", "bad-1") == 2 and server.version("logs", "bad-1") == 1


def test_reject_mapping_fails_documents_with_the_field_until_cleared(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    server.reject_mapping("payload.blob", index_pattern="agent-*")
    lines = [
        *index("1", {"payload": {"blob": 1}}, "agent-x"),
        *index("2", {"payload.blob": 2}, "agent-x"),
        *index("3", {"payload": {"other": 1}}, "agent-x"),
        *index("4", {"payload": {"blob": 1}}, "other"),
    ]
    for expected in ([400, 400, 201, 201], [400, 400, 200, 200]):
        results = items(bulk(client, *lines))
        assert [r["status"] for _, r in results] == expected
        assert results[0][1]["error"]["type"] == "document_parsing_exception"
        assert "failed to parse field [payload.blob]" in results[0][1]["error"]["reason"]
        assert results[1][1]["error"]["reason"].endswith("Preview of field's value: '2'")
    server.clear_faults()
    assert bulk(client, *lines)["errors"] is False


def test_slow_holds_answers_back_after_applying_the_writes(
    server: FakeElasticsearch, client: httpx.Client
) -> None:
    server.slow(0.3)
    started = time.monotonic()
    assert client.get("/").status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        client.post("/_bulk", content=ndjson(*index("1", {})), headers=NDJSON, timeout=0.1)
    assert server.doc("logs", "1") == {}, "a slow ES still applies what the client gave up on"
    server.slow(0)
    started = time.monotonic()
    client.get("/")
    assert time.monotonic() - started < 0.3


def test_hang_never_answers_until_cleared(server: FakeElasticsearch, client: httpx.Client) -> None:
    server.hang()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/_bulk", content=ndjson(*index("1", {})), headers=NDJSON, timeout=0.2)
    assert server.doc("logs", "1") is None
    server.clear_faults()
    assert client.get("/").status_code == 200
    server.hang()
    with pytest.raises(httpx.ReadTimeout):
        client.get("/", timeout=0.2)
    server.up()
    assert client.get("/").status_code == 200


def test_a_hung_request_proceeds_when_released(server: FakeElasticsearch, client: httpx.Client) -> None:
    server.hang()
    answers: list[int] = []
    waiter = threading.Thread(
        target=lambda: answers.append(bulk(client, *index("1", {}))["items"][0]["index"]["status"])
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and server.doc("logs", "1") is None
    server.clear_faults()
    waiter.join(10)
    assert answers == [201]


def test_stop_ends_the_thread_and_the_port() -> None:
    es = FakeElasticsearch(refresh_interval_s=0.05).start()
    port = es.port
    es.hang()
    with httpx.Client(base_url=es.url) as c, pytest.raises(httpx.ReadTimeout):
        c.get("/", timeout=0.1)
    es.stop()
    assert not [t for t in threading.enumerate() if t.name == "fake-elasticsearch"]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_runs_standalone_on_a_fixed_port_until_interrupted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.replayer._es_server", "--port", str(port)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["version"]["number"] == "8.15.0"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

"""Repo CARs from real PDSes: records in key order, commits, signatures; and the writer's round trip."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from atp import cbor
from atp.car import read_car_bytes
from atp.crypto import PublicKey, SigningKey
from atp.errors import CarBlockMismatchError, CommitError, MissingBlockError, SignatureError
from atp.repo import RepoReader, RepoRecord, build_repo, diff_blocks

ReadRepo = Callable[..., Awaitable[RepoReader]]

# From MANIFEST.md: (commit version, rev, record count).
EXPECTED = {
    "arroba_snarfed2.car": (3, "3lh6cdwqxx42x", 5),
    "atcute_test_repo.car": (3, "3l5q5fjentc2d", 2),
    "indigo_bafyreieovfuizojpw3zresz7sx3nk4trm2by23pt5rxbey3jme4uo5ogiu.car": (2, None, 6),
    "indigo_bnewbold.robocracy.org.20250310005405.car": (3, "3ljlyqit2uk2l", 38),
    "indigo_divy.repo.car": (2, None, 6),
    "indigo_fakermaker.repo.car": (2, None, 142),
    "indigo_greenground.repo.car": (3, "3k67up3j7hf2x", 2),
    "indigo_greenground_v2.repo.car": (2, None, 50),
    "indigo_paul_staging.repo.car": (2, None, 185),
    "jetstream_corpus_repo.car": (3, "3migo7fijwi2k", 23),
    "phpcar_repo.car": (3, "3mpre2ud6hy2u", 83),
    "repostream_empty.car": (3, "3m5fo6xa2js2x", 0),
    "repostream_little.car": (3, "3m2jradrsah2s", 278),
    "repostream_tiny.car": (3, "3lscuqc52or2x", 8),
    "rsky_valid_repo.car": (3, "3lhmydhwizp2d", 6),
}


async def _records(reader: RepoReader) -> list[RepoRecord]:
    return [rec async for rec in reader.records()]


def test_every_valid_car_is_listed(atproto_data: Path) -> None:
    names = {p.name for p in (atproto_data / "car").glob("*.car")}
    assert names == set(EXPECTED) | {"indigo_repo_slice.car"}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_repo_cars(atproto_data: Path, repo_from_bytes: ReadRepo, name: str) -> None:
    version, rev, count = EXPECTED[name]
    reader = await repo_from_bytes((atproto_data / "car" / name).read_bytes(), chunk=1000)
    assert (reader.commit.version, reader.commit.rev) == (version, rev)
    records = await _records(reader)
    assert len(records) == count
    keys = [r.key for r in records]
    assert keys == sorted(keys) and len(set(keys)) == count
    assert all(cbor.cid_for(reader.blocks[cbor.CID.from_str(r.cid)]) == r.cid for r in records)


@pytest.mark.anyio
async def test_jetstream_repo_matches_goat(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    car = atproto_data / "car" / "jetstream_corpus_repo.car"
    reader = await repo_from_bytes(car.read_bytes())
    listing = car.with_name("jetstream_corpus_repo.expected_records.tsv").read_text()
    expected = [tuple(line.split("\t")) for line in listing.splitlines() if line.strip()]
    assert [(r.key, r.cid) for r in await _records(reader)] == expected
    commit = dict(line.split(": ", 1) for line in car.with_name("jetstream_corpus_repo.expected_commit.txt")
                  .read_text().splitlines())  # fmt: skip
    assert (reader.commit.did, reader.commit.data, reader.commit.rev) == (
        commit["DID"], commit["Data CID"], commit["Revision"])  # fmt: skip
    assert reader.commit.prev is None


@pytest.mark.anyio
async def test_phpcar_repo_matches_its_json(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    car = atproto_data / "car" / "phpcar_repo.car"
    expected = json.loads(car.with_suffix(".json").read_text())
    reader = await repo_from_bytes(car.read_bytes())
    assert [reader.commit.cid] == expected["header"]["roots"]
    records = await _records(reader)
    typed = {cid for cid, block in expected["blocks"].items() if "$type" in block}
    assert {r.cid for r in records} == typed
    for rec in records:
        assert rec.record["$type"] == expected["blocks"][rec.cid]["$type"] == rec.collection


def _dag_json_to_model(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"/"}:
            return {"$link": obj["/"]}
        return {k: _dag_json_to_model(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dag_json_to_model(v) for v in obj]
    return obj


@pytest.mark.anyio
async def test_arroba_records_match_json(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    car = atproto_data / "car" / "arroba_snarfed2.car"
    expected = json.loads(car.with_suffix(".json").read_text())
    reader = await repo_from_bytes(car.read_bytes())
    got = {(r.collection, r.rkey): cbor.to_json_model(r.record) for r in await _records(reader)}
    want = {(c, k): _dag_json_to_model(v) for c, recs in expected.items() for k, v in recs.items()}
    assert got == want


@pytest.mark.anyio
async def test_repostream_little_record_bytes(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    # repo-stream's own test: 278 records whose blocks total 246,960 bytes.
    reader = await repo_from_bytes((atproto_data / "car" / "repostream_little.car").read_bytes())
    records = await _records(reader)
    total = sum(len(reader.blocks[cbor.CID.from_str(r.cid)]) for r in records)
    assert total == 246_960
    assert Counter(r.collection for r in records)["app.bsky.feed.post"] == 85


@pytest.mark.anyio
async def test_partial_slice_reports_missing_block(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    data = (atproto_data / "car" / "indigo_repo_slice.car").read_bytes()
    reader = await repo_from_bytes(data)
    with pytest.raises(MissingBlockError):
        await _records(reader)
    _, blocks = read_car_bytes(data)
    record = json.loads((atproto_data / "car" / "indigo_repo_slice_record.json").read_text())
    assert cbor.to_json_model(cbor.decode(blocks[record["cid"]])) == record["value"]


# DID document -> the CAR it signs. The z5vn document's key does not verify its CAR's commit
# (checked against the uncompressed and the CID-signing variants): the fixture pair is inconsistent.
SIGNED = {
    "indigo_fakermaker.didDoc.json": "indigo_fakermaker.repo.car",
    "indigo_greenground.didDoc.json": "indigo_greenground_v2.repo.car",
    "indigo_paul_staging.didDoc.json": "indigo_paul_staging.repo.car",
}


@pytest.mark.anyio
@pytest.mark.parametrize("doc_name", sorted(SIGNED))
async def test_did_docs_verify_their_cars(
    atproto_data: Path, repo_from_bytes: ReadRepo, doc_name: str
) -> None:
    doc = json.loads((atproto_data / "car" / doc_name).read_text())
    key = PublicKey.from_did_doc(doc)
    data = (atproto_data / "car" / SIGNED[doc_name]).read_bytes()
    reader = await repo_from_bytes(data, did=doc["id"], signing_key=key)
    assert reader.commit.did == doc["id"]
    with pytest.raises(SignatureError):
        await repo_from_bytes(data, signing_key=SigningKey.generate(key.curve, seed=b"other").public_key)
    with pytest.raises(CommitError):
        await repo_from_bytes(data, did="did:plc:someoneelse")


@pytest.mark.anyio
async def test_inconsistent_fixture_pair_is_rejected(atproto_data: Path, repo_from_bytes: ReadRepo) -> None:
    doc = json.loads(
        (atproto_data / "car" / "indigo_did_plc_z5vnbioquyhivxirw3bbljmu.didDoc.json").read_text()
    )
    data = atproto_data / "car" / "indigo_bafyreieovfuizojpw3zresz7sx3nk4trm2by23pt5rxbey3jme4uo5ogiu.car"
    with pytest.raises(SignatureError):
        await repo_from_bytes(data.read_bytes(), signing_key=PublicKey.from_did_doc(doc))


def _sample_records(n: int) -> list[tuple[str, Any]]:
    return [(f"app.bsky.feed.post/3k{i:011d}", {"$type": "app.bsky.feed.post", "text": f"post {i}",
             "createdAt": "2024-01-01T00:00:00.000Z"}) for i in range(n)]  # fmt: skip


@pytest.mark.anyio
async def test_build_read_round_trip(repo_from_bytes: ReadRepo) -> None:
    key = SigningKey.generate("p256", seed=b"round-trip")
    records = _sample_records(500)
    blob = {
        "$type": "blob",
        "ref": cbor.CID.from_str(cbor.cid_for(b"img")),
        "mimeType": "image/png",
        "size": 3,
    }
    records.append(("app.bsky.actor.profile/self", {"$type": "app.bsky.actor.profile", "avatar": blob,
                                                    "raw": b"\x01q\x12 bytes-not-a-link"}))  # fmt: skip
    built = build_repo("did:plc:roundtrip", records, rev="3kaaaaaaaaaa2", signing_key=key)
    reader = await repo_from_bytes(built.car, chunk=333, did="did:plc:roundtrip", signing_key=key.public_key)
    assert reader.commit.cid == built.commit_cid and reader.commit.data == built.root
    got = {r.key: (r.cid, r.record) for r in await _records(reader)}
    assert got == {k: (built.record_cids[k], v) for k, v in records}
    avatar = got["app.bsky.actor.profile/self"][1]["avatar"]["ref"]
    assert type(avatar) is cbor.CID and type(got["app.bsky.actor.profile/self"][1]["raw"]) is bytes


def test_diff_blocks_is_new_path_only() -> None:
    key = SigningKey.generate(seed=b"diff")
    records = _sample_records(2000)
    old = build_repo("did:plc:diff", records, rev="3kaaaaaaaaaa2", signing_key=key)
    new = build_repo("did:plc:diff", [*records, ("app.bsky.feed.like/3kzzzzzzzzzz2", {"a": 1})],
                     rev="3kaaaaaaaaab2", signing_key=key, prev=old.commit_cid)  # fmt: skip
    diff = diff_blocks(old, new)
    assert (
        new.commit_cid in diff
        and new.root in diff
        and new.record_cids["app.bsky.feed.like/3kzzzzzzzzzz2"] in diff
    )
    assert len(diff) < 12  # commit + record + one node per layer
    assert set(diff) <= new.node_cids | {new.commit_cid, *new.record_cids.values()}


@pytest.mark.anyio
async def test_tampered_repo_is_refused(repo_from_bytes: ReadRepo) -> None:
    built = build_repo(
        "did:plc:t", _sample_records(50), rev="3kaaaaaaaaaa2", signing_key=SigningKey.generate()
    )
    for offset in (len(built.car) // 3, len(built.car) // 2, len(built.car) - 3):
        data = bytearray(built.car)
        data[offset] ^= 0x40
        with pytest.raises(CarBlockMismatchError):
            await repo_from_bytes(bytes(data))

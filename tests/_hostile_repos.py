"""Hostile repos and a hostile PDS for tests: correctly signed CARs whose structure is the attack.

Every repo here is built with the project's own writers (DAG-CBOR encoder, commit signer, CAR
writer) and signed with the key its DID document publishes, so a reader gets past framing, hashes
and the signature: only the shape (block count, MST structure) is hostile.

`HostilePds` serves them over HTTP on loopback, as both the PLC directory (`GET /{did}`) and the
PDS (`GET /xrpc/com.atproto.sync.getRepo`), so a real backfiller resolves and downloads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

from atp.car import iter_car
from atp.cbor import CID, cid_bytes_for, cid_str, encode
from atp.commit import sign_commit
from atp.crypto import SigningKey
from atp.mst import key_height
from atp.repo import build_repo

REV = "3kaaaaaaaaaa2"
RECORD = encode({"$type": "app.bsky.feed.like", "createdAt": "2024-01-01T00:00:00.000Z"})
RECORD_CID = cid_bytes_for(RECORD)

Entry = tuple[bytes, bytes, "bytes | None"]  # (full key, value CID, right subtree CID)


def did_for(name: str) -> str:
    """A valid did:plc for a test repo (24 base32 characters)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    digest = hashlib.sha256(name.encode()).digest()
    return "did:plc:" + "".join(alphabet[b % 32] for b in digest[:24])


def keys_on_layer(layer: int, count: int, prefix: str = "app.bsky.feed.like/k") -> list[bytes]:
    """`count` sorted record paths whose MST layer is exactly `layer` (mined)."""
    out: list[bytes] = []
    i = 0
    while len(out) < count:
        key = f"{prefix}{i:012d}".encode()
        if key_height(key) == layer:
            out.append(key)
        i += 1
    return out


def node(entries: Iterable[Entry], left: bytes | None = None) -> tuple[bytes, bytes]:
    """Encode an MST node (prefix-compressed like the reference writer): (CID, block)."""
    out = []
    previous = b""
    for key, value, right in entries:
        p = 0
        while p < min(len(key), len(previous)) and key[p] == previous[p]:
            p += 1
        out.append({"p": p, "k": key[p:], "v": CID(value), "t": CID(right) if right else None})
        previous = key
    block = encode({"e": out, "l": CID(left) if left else None})
    return cid_bytes_for(block), block


@dataclass
class HostileRepo:
    """A signed repo: its DID, key, and the blocks of its CAR (commit first)."""

    did: str
    key: SigningKey
    blocks: list[tuple[bytes, bytes]]
    records: int = 0  # records a correct reader yields (for a repo meant to be read)

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        return iter_car([self.blocks[0][0]], self.blocks, chunk_size=size)

    def car(self) -> bytes:
        return b"".join(self.chunks())


def signed(name: str, root: bytes, blocks: Iterable[tuple[bytes, bytes]], records: int = 0) -> HostileRepo:
    """Sign a commit over the MST at `root` and gather the repo's blocks."""
    did = did_for(name)
    key = SigningKey.generate(seed=name.encode())
    commit, commit_block = sign_commit(did, cid_str(root), rev=REV, signing_key=key)
    return HostileRepo(did, key, [(CID.from_str(commit), commit_block), *blocks], records)


def tiny_blocks(name: str, count: int, records: int = 20) -> HostileRepo:
    """A valid small repo plus `count` distinct unreferenced 9-byte blocks (CBOR integers)."""
    key = SigningKey.generate(seed=name.encode())
    did = did_for(name)
    records_ = ((f"app.bsky.feed.like/k{i:012d}", {"n": i}) for i in range(records))
    built = build_repo(did, records_, rev=REV, signing_key=key)
    blocks = [(CID.from_str(c), b) for c, b in built.blocks.items()]
    blocks.sort(key=lambda item: item[0] != CID.from_str(built.commit_cid))  # the commit first
    tiny = (b"\x1b" + i.to_bytes(8, "big") for i in range(count))
    return HostileRepo(did, key, blocks + [(cid_bytes_for(t), t) for t in tiny], records)


def dag_chain(name: str, fanout: int = 600, chain: int = 50_000) -> HostileRepo:
    """The issue's shape: a root whose `fanout` entries all point at one chain of `chain` empty nodes.

    A walk that does not check the tree visits the chain once per root entry (fanout x chain node
    loads) and yields the root's records.
    """
    link, block = node([])
    blocks = [(link, block)]
    for _ in range(chain - 1):
        link, block = node([], left=link)
        blocks.append((link, block))
    keys = keys_on_layer(1, fanout)
    root, root_block = node([(k, RECORD_CID, link) for k in keys])
    return signed(name, root, [(root, root_block), *reversed(blocks), (RECORD_CID, RECORD)], fanout)


@dataclass
class _Served:
    repo: HostileRepo
    pace_s: float = 0.0  # pause between chunks: a download that lasts, whatever the machine's speed
    downloads: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)


class HostilePds:
    """A PLC directory and PDS in one aiohttp app on 127.0.0.1, serving registered repos."""

    def __init__(self) -> None:
        self._repos: dict[str, _Served] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add(self, repo: HostileRepo, pace_s: float = 0.0) -> None:
        self._repos[repo.did] = _Served(repo, pace_s)

    def served(self, did: str) -> _Served:
        return self._repos[did]

    async def __aenter__(self) -> HostilePds:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", self._get_repo)
        app.router.add_get("/{did}", self._resolve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _resolve(self, request: web.Request) -> web.Response:
        served = self._repos.get(request.match_info["did"])
        if served is None:
            return web.json_response({"message": "DID not registered"}, status=404)
        return web.json_response(_did_document(served.repo, self.url))

    async def _get_repo(self, request: web.Request) -> web.StreamResponse:
        served = self._repos.get(request.query.get("did", ""))
        if served is None:
            return web.json_response({"error": "RepoNotFound", "message": "no such repo"}, status=400)
        served.downloads += 1
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        await response.prepare(request)
        for chunk in served.repo.chunks():
            await response.write(chunk)
            if served.pace_s:
                await anyio.sleep(served.pace_s)
        await response.write_eof()
        served.done.set()
        return response


def _did_document(repo: HostileRepo, pds_url: str) -> dict[str, Any]:
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": repo.did,
        "alsoKnownAs": [],
        "verificationMethod": [
            {
                "id": f"{repo.did}#atproto",
                "type": "Multikey",
                "controller": repo.did,
                "publicKeyMultibase": repo.key.public_key.multibase(),
            }
        ],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_url}],
    }

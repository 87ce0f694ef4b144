"""atp.did: did:plc through the devnet PLC directory, did:web through a local server, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from atp.crypto import SigningKey
from atp.did import DidResolver, parse_did_document, validate_did
from atp.errors import DidResolutionError, InvalidDid
from devnet import Devnet
from tests._support import LOOPBACK

pytestmark = pytest.mark.anyio


@pytest.fixture
async def web_host() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A local did:web host; put the document to serve in the returned dict under "doc"."""
    served: dict[str, object] = {}

    async def did_json(request: web.Request) -> web.Response:
        if "doc" not in served:
            return web.Response(status=404)
        return web.json_response(served["doc"])

    app = web.Application()
    app.router.add_get("/.well-known/did.json", did_json)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", served
    finally:
        await runner.cleanup()


async def test_resolves_plc_did_through_devnet(net: Devnet) -> None:
    account = net.world.accounts[3]
    async with DidResolver(plc_url=net.plc_url) as resolver:
        resolved = await resolver.resolve(account.did)
    assert resolved.pds_endpoint == net.pds_urls[account.pds]
    assert resolved.handle == account.handle
    assert resolved.signing_key.did_key() == account.key.did_key()


async def test_p256_accounts_resolve_too(net: Devnet) -> None:
    account = next(a for a in net.world.accounts if a.key.curve == "p256")
    async with DidResolver(plc_url=net.plc_url) as resolver:
        assert (await resolver.resolve(account.did)).signing_key.curve == "p256"


async def test_did_web_via_host_override(web_host: tuple[str, dict[str, object]]) -> None:
    base, served = web_host
    did = "did:web:alice.devnet.test"
    key = SigningKey.generate("secp256k1", seed=b"web")
    served["doc"] = {
        "id": did,
        "alsoKnownAs": ["at://alice.devnet.test"],
        "verificationMethod": [
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": key.public_key.multibase(),
            }
        ],
        "service": [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": base + "/"}
        ],
    }
    async with DidResolver(web_hosts={"alice.devnet.test": base}) as resolver:
        resolved = await resolver.resolve(did)
    assert resolved.pds_endpoint == base and resolved.handle == "alice.devnet.test"
    assert resolved.signing_key.did_key() == key.did_key()


async def test_did_web_with_port_over_http(web_host: tuple[str, dict[str, object]]) -> None:
    base, served = web_host
    did = "did:web:" + base.removeprefix("http://").replace(":", "%3A")
    served["doc"] = {"id": did, "alsoKnownAs": [], "verificationMethod": [], "service": []}
    async with DidResolver(web_scheme="http", policy=LOOPBACK) as resolver:
        assert resolver.document_url(did) == base + "/.well-known/did.json"
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve(did)  # the document has no PDS: permanent
    assert info.value.permanent


async def test_unknown_plc_did_is_permanent(net: Devnet) -> None:
    async with DidResolver(plc_url=net.plc_url) as resolver:
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert info.value.permanent


async def test_unreachable_directory_is_transient() -> None:
    async with DidResolver(plc_url="http://127.0.0.1:9") as resolver:
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert not info.value.permanent


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "did:plc:",
        "plc:abc",
        "did:PLC:aaaaaaaaaaaaaaaaaaaaaaaa",
        "did:plc:short",
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaa1",
        "did:web:host/path",
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa:",
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n",
    ],
)
async def test_invalid_did_strings(bad: str) -> None:
    with pytest.raises(InvalidDid):
        validate_did(bad)
    async with DidResolver(plc_url="http://127.0.0.1:9") as resolver:
        with pytest.raises(InvalidDid):
            await resolver.resolve(bad)


def test_interop_did_syntax_vectors(atproto_data: Path) -> None:
    base = atproto_data / "interop" / "syntax"
    valid = [
        ln for ln in (base / "did_syntax_valid.txt").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    invalid = [
        ln
        for ln in (base / "did_syntax_invalid.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    for did in valid:
        if did.startswith(("did:plc:", "did:web:")) and len(did) < 200:
            continue  # method-specific rules (plc length, web host) are stricter than the generic grammar
        validate_did(did)
    for did in invalid:
        with pytest.raises(InvalidDid):
            validate_did(did)


def test_real_did_documents_parse(atproto_data: Path) -> None:
    for name in ("indigo_did_plc_doc.json", "indigo_did_plc_doc_legacy.json"):
        doc = json.loads((atproto_data / "identity" / name).read_text())
        resolved = parse_did_document(doc["id"], doc)
        assert resolved.pds_endpoint == "https://bsky.social" and resolved.handle == "atproto.com"
    web_doc = json.loads((atproto_data / "identity" / "indigo_did_web_doc.json").read_text())
    with pytest.raises(DidResolutionError):
        parse_did_document(web_doc["id"], web_doc)  # a feed generator: no PDS, no #atproto key

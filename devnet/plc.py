"""A PLC directory: `GET /{did}` answers the DID document of every devnet account and the labeler."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from atp.crypto import SigningKey
from devnet.http import Urls
from devnet.state import Account, World

__all__ = ["account_document", "plc_app"]

_CONTEXT = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/multikey/v1",
    "https://w3id.org/security/suites/secp256k1-2019/v1",
]


def _document(
    did: str, key: SigningKey, key_id: str, handle: str | None, services: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "@context": _CONTEXT,
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle else [],
        "verificationMethod": [
            {
                "id": f"{did}#{key_id}",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": key.public_key.multibase(),
            }
        ],
        "service": services,
    }


def account_document(account: Account, pds_url: str) -> dict[str, Any]:
    """The DID document of an account: `#atproto` key, handle and `#atproto_pds` endpoint."""
    service = {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_url}
    return _document(account.did, account.key, "atproto", account.handle, [service])


def labeler_document(world: World, labeler_url: str) -> dict[str, Any]:
    """The labeler's DID document: `#atproto_label` key and `#atproto_labeler` endpoint."""
    service = {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": labeler_url}
    return _document(world.labeler_did, world.labeler_key, "atproto_label", "labeler.devnet.test", [service])


def plc_app(world: World, urls: Urls) -> web.Application:
    """HTTP app of the PLC directory."""
    app = web.Application()

    async def resolve(request: web.Request) -> web.Response:
        did = request.match_info["did"]
        account = world.by_did.get(did)
        if account is not None:
            world.count("plc.resolve")
            return web.json_response(account_document(account, urls.pds[account.pds]))
        if did == world.labeler_did:
            return web.json_response(labeler_document(world, urls.labeler))
        return web.json_response({"message": f"DID not registered: {did}"}, status=404)

    app.router.add_get("/{did}", resolve)
    return app

"""DID resolution for `did:plc` (through a PLC directory) and `did:web` (`/.well-known/did.json`).

Failures are `DidResolutionError` with `permanent` set per instance: a DID the directory does not
know (404), has tombstoned (410), or whose document lacks a PDS or `#atproto` key is permanent;
timeouts, connection errors and 5xx are transient. A malformed DID string raises `InvalidDid`
before any network call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx

from atp import syntax
from atp.crypto import PublicKey
from atp.errors import DidResolutionError, InvalidDid

__all__ = ["DidResolver", "ResolvedDid", "parse_did_document", "validate_did"]

DEFAULT_PLC_URL = "https://plc.directory"
_PLC_RE = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB_HOST_RE = re.compile(r"[a-zA-Z0-9.-]+(%3[aA][0-9]+)?")
# DID documents are small; a huge one is an attack or a misconfiguration.
_MAX_DOC_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ResolvedDid:
    """What a backfill needs from a DID document."""

    did: str
    pds_endpoint: str
    signing_key: PublicKey
    handle: str | None


def validate_did(did: str) -> str:
    """Return `did` if it is syntactically valid (and a well-formed plc/web DID), else raise InvalidDid."""
    syntax.validate_did(did)  # the generic grammar; raises InvalidDid
    if did.startswith("did:plc:") and not _PLC_RE.fullmatch(did):
        raise InvalidDid(f"invalid did:plc identifier: {did!r}")
    if did.startswith("did:web:") and not _WEB_HOST_RE.fullmatch(did.removeprefix("did:web:")):
        raise InvalidDid(f"did:web with a path or bad host is not supported: {did!r}")
    return did


def _service_endpoint(doc: Mapping[str, Any], did: str) -> str | None:
    for service in doc.get("service") or []:
        if not isinstance(service, dict):
            continue
        sid = str(service.get("id", ""))
        if (
            sid in ("#atproto_pds", f"{did}#atproto_pds")
            and service.get("type") == "AtprotoPersonalDataServer"
        ):
            endpoint = service.get("serviceEndpoint")
            return endpoint if isinstance(endpoint, str) else None
    return None


def _handle(doc: Mapping[str, Any]) -> str | None:
    for aka in doc.get("alsoKnownAs") or []:
        if isinstance(aka, str) and aka.startswith("at://"):
            return aka.removeprefix("at://")
    return None


def parse_did_document(did: str, doc: Any) -> ResolvedDid:
    """Extract PDS endpoint, `#atproto` signing key and handle; a broken document is permanent."""
    if not isinstance(doc, dict) or doc.get("id") != did:
        raise DidResolutionError(f"{did}: document id does not match", permanent=True)
    endpoint = _service_endpoint(doc, did)
    if not endpoint:
        raise DidResolutionError(f"{did}: no #atproto_pds service", permanent=True)
    try:
        key = PublicKey.from_did_doc(doc)
    except Exception as exc:  # any malformed key material is a property of the document
        raise DidResolutionError(f"{did}: no usable #atproto key ({exc})", permanent=True) from exc
    return ResolvedDid(did=did, pds_endpoint=endpoint.rstrip("/"), signing_key=key, handle=_handle(doc))


class DidResolver:
    """Resolves DIDs over HTTP; `web_hosts` maps a did:web host to a base URL (tests, devnets)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        plc_url: str = DEFAULT_PLC_URL,
        web_scheme: str = "https",
        web_hosts: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._owned = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        self._plc_url = plc_url.rstrip("/")
        self._web_scheme = web_scheme
        self._web_hosts = dict(web_hosts or {})

    async def __aenter__(self) -> DidResolver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this resolver created it."""
        if self._owned:
            await self._client.aclose()

    def document_url(self, did: str) -> str:
        """The URL the DID document of `did` is fetched from."""
        validate_did(did)
        if did.startswith("did:plc:"):
            return f"{self._plc_url}/{did}"
        if did.startswith("did:web:"):
            host = unquote(did.removeprefix("did:web:"))
            base = self._web_hosts.get(host) or f"{self._web_scheme}://{host}"
            return f"{base.rstrip('/')}/.well-known/did.json"
        raise InvalidDid(f"unsupported DID method: {did!r}")

    async def resolve(self, did: str) -> ResolvedDid:
        """Fetch and parse the DID document of `did`."""
        url = self.document_url(did)
        return parse_did_document(did, await self._fetch(did, url))

    async def _fetch(self, did: str, url: str) -> Any:
        try:
            response = await self._client.get(url, follow_redirects=True)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise DidResolutionError(f"{did}: {type(exc).__name__} fetching {url}", permanent=False) from exc
        status = response.status_code
        if status in (404, 410):
            raise DidResolutionError(f"{did}: not found ({status})", permanent=True)
        if status >= 500 or status == 429:
            raise DidResolutionError(f"{did}: directory answered {status}", permanent=False)
        if status >= 300:
            raise DidResolutionError(f"{did}: directory answered {status}", permanent=True)
        if len(response.content) > _MAX_DOC_BYTES:
            raise DidResolutionError(f"{did}: document too large", permanent=True)
        try:
            return response.json()
        except ValueError as exc:
            raise DidResolutionError(f"{did}: document is not JSON", permanent=True) from exc

"""DID resolution for `did:plc` (through a PLC directory) and `did:web` (`/.well-known/did.json`).

Failures are `DidResolutionError` with `permanent` set per instance: a DID the directory does not
know (404), has tombstoned (410), or whose document lacks a PDS or `#atproto` key is permanent;
so is an answer we refuse (a document above `MAX_DOC_BYTES`, a content coding we did not ask for,
too many redirects) and a host the network policy refuses (`atp.netpolicy`: a `did:web` on a
private address, or with a port unless private hosts are allowed). Timeouts, connection errors,
429 and 5xx are transient. A malformed DID string raises `InvalidDid` before any network call.
Every fetch has a deadline (`timeout_s`) and a body cap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from atp import syntax
from atp.crypto import PublicKey
from atp.errors import DidResolutionError, ForbiddenHost, InvalidDid, ResponseRejected, UpstreamError
from atp.http import Deadline, HttpClient
from atp.netpolicy import NetPolicy

__all__ = ["DidResolver", "ResolvedDid", "parse_did_document", "validate_did"]

DEFAULT_PLC_URL = "https://plc.directory"
_PLC_RE = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB_HOST_RE = re.compile(r"[a-zA-Z0-9.-]+(%3[aA][0-9]+)?")
# DID documents are small (PLC caps an operation at a few KB); a huge one is an attack.
MAX_DOC_BYTES = 256 * 1024


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
    if not endpoint.startswith(("https://", "http://")):
        raise DidResolutionError(f"{did}: PDS endpoint {endpoint[:200]!r} is not http(s)", permanent=True)
    try:
        key = PublicKey.from_did_doc(doc)
    except Exception as exc:  # any malformed key material is a property of the document
        raise DidResolutionError(f"{did}: no usable #atproto key ({exc})", permanent=True) from exc
    return ResolvedDid(did=did, pds_endpoint=endpoint.rstrip("/"), signing_key=key, handle=_handle(doc))


class DidResolver:
    """Resolves DIDs over HTTP; `web_hosts` maps a did:web host to a base URL (tests, devnets).

    Without an `http` client of its own, the resolver makes one with `policy` (default: private
    hosts refused), trusting its configured `plc_url` and `web_hosts`.
    """

    def __init__(
        self,
        http: HttpClient | None = None,
        *,
        plc_url: str = DEFAULT_PLC_URL,
        web_scheme: str = "https",
        web_hosts: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        policy: NetPolicy | None = None,
    ) -> None:
        self._web_hosts = dict(web_hosts or {})
        self._owned = http is None
        if http is None:
            trusted = (policy or NetPolicy()).trusting([plc_url, *self._web_hosts.values()])
            http = HttpClient(trusted, read_timeout_s=timeout_s)
        self._http = http
        self._plc_url = plc_url.rstrip("/")
        self._web_scheme = web_scheme
        self._timeout_s = timeout_s

    async def __aenter__(self) -> DidResolver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this resolver created it."""
        if self._owned:
            await self._http.aclose()

    def document_url(self, did: str) -> str:
        """The URL the DID document of `did` is fetched from."""
        validate_did(did)
        if did.startswith("did:plc:"):
            return f"{self._plc_url}/{did}"
        if did.startswith("did:web:"):
            host = unquote(did.removeprefix("did:web:"))
            mapped = self._web_hosts.get(host)
            if mapped:
                return f"{mapped.rstrip('/')}/.well-known/did.json"
            if ":" in host and not self._http.policy.allow_private:
                # A port names a service that is not the host's web server: only on devnets.
                raise DidResolutionError(f"{did}: did:web with a port is refused", permanent=True)
            return f"{self._web_scheme}://{host}/.well-known/did.json"
        raise InvalidDid(f"unsupported DID method: {did!r}")

    async def resolve(self, did: str) -> ResolvedDid:
        """Fetch and parse the DID document of `did`."""
        url = self.document_url(did)
        return parse_did_document(did, await self._fetch(did, url))

    async def _fetch(self, did: str, url: str) -> Any:
        try:
            reply, content = await self._http.get(
                url, max_bytes=MAX_DOC_BYTES, deadline=Deadline.after(self._timeout_s)
            )
        except UpstreamError as exc:
            raise DidResolutionError(f"{did}: fetching {url}: {exc}", permanent=False) from exc
        except (ForbiddenHost, ResponseRejected) as exc:
            raise DidResolutionError(f"{did}: {type(exc).__name__}: {exc}", permanent=True) from exc
        status = reply.status
        if status in (404, 410):
            raise DidResolutionError(f"{did}: not found ({status})", permanent=True)
        if status >= 500 or status in (408, 429):
            raise DidResolutionError(f"{did}: directory answered {status}", permanent=False)
        if status >= 300:
            raise DidResolutionError(f"{did}: directory answered {status}", permanent=True)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise DidResolutionError(f"{did}: document is not JSON", permanent=True) from exc

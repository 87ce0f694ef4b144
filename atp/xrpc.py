"""XRPC client for the sync endpoints a backfill needs: listRepos, getRepo, getRepoStatus.

Every failure leaves this module as one of the `atp.errors` classes, translated in one place
(`_raise_for_response` and `_translate_transport_errors`):

==============================================  ======================  =========
upstream answer                                 raised                  permanent
==============================================  ======================  =========
400 ``{"error": "RepoNotFound"}`` (or 404)      ``RepoNotFound``        yes
400 ``{"error": "RepoTakendown"}``              ``RepoTakendown``       yes
400 ``{"error": "RepoDeactivated"}``            ``RepoDeactivated``     yes
400 ``{"error": "RepoSuspended"}``              ``RepoSuspended``       yes
other 4xx (bad request, unknown error name)     ``XrpcError``           yes
429 (``Retry-After`` s / HTTP date,             ``RateLimited``         no
``ratelimit-reset`` epoch s)                    (``retry_after_s``)
5xx, unparseable body                           ``UpstreamError``       no
timeout, connection refused/reset, bad redirect ``UpstreamError``       no
body larger than ``max_bytes``                  ``RepoTooLarge``        yes
==============================================  ======================  =========
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import orjson

from atp.errors import (
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    RepoTooLarge,
    UpstreamError,
    XrpcError,
)

__all__ = ["ListReposPage", "RepoStatus", "XrpcClient", "base_url"]

LIST_REPOS = "com.atproto.sync.listRepos"
GET_REPO = "com.atproto.sync.getRepo"
GET_REPO_STATUS = "com.atproto.sync.getRepoStatus"

_PERMANENT_BY_NAME: dict[str, type[XrpcError]] = {
    "RepoNotFound": RepoNotFound,
    "RepoTakendown": RepoTakendown,
    "RepoDeactivated": RepoDeactivated,
    "RepoSuspended": RepoSuspended,
}
# When a 429 carries no usable hint we still want the caller to back off for a while.
DEFAULT_RETRY_AFTER_S = 5.0
# Error bodies are small JSON; anything bigger is not an XRPC error body.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class ListReposPage:
    """One page of `com.atproto.sync.listRepos`; `cursor` is None on the last page."""

    repos: list[dict[str, Any]]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class RepoStatus:
    """Answer of `com.atproto.sync.getRepoStatus`."""

    did: str
    active: bool
    status: str | None = None
    rev: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def base_url(url_or_host: str) -> str:
    """`host` -> `https://host`; a URL with a scheme is kept (minus a trailing slash)."""
    if "://" in url_or_host:
        return url_or_host.rstrip("/")
    return f"https://{url_or_host.rstrip('/')}"


def _xrpc_url(url_or_host: str, nsid: str) -> str:
    return f"{base_url(url_or_host)}/xrpc/{nsid}"


def _parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or `ratelimit-reset` (epoch s)."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        with contextlib.suppress(TypeError, ValueError):  # neither form: try ratelimit-reset
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    reset = headers.get("ratelimit-reset")
    if reset and reset.strip().isdigit():
        return max(0.0, float(reset.strip()) - now)
    return DEFAULT_RETRY_AFTER_S


def _error_body(content: bytes) -> tuple[str, str]:
    """(error name, message) from an XRPC error body, or ("", "") when it is not one."""
    try:
        body = orjson.loads(content[:_MAX_ERROR_BODY])
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or ""), str(body.get("message") or "")


def _raise_for_response(response: httpx.Response, content: bytes) -> None:
    """Translate a non-2xx response into the `atp.errors` tree (see the module table)."""
    status = response.status_code
    if status < 400:
        return
    name, message = _error_body(content)
    if status == 429:
        retry_after_s = _parse_retry_after(response.headers)
        error = name or "RateLimitExceeded"
        raise RateLimited(message or error, status=status, error=error, retry_after_s=retry_after_s)
    if status >= 500:
        raise UpstreamError(message or "server error", status=status, error=name or "InternalServerError")
    if name in _PERMANENT_BY_NAME:
        raise _PERMANENT_BY_NAME[name](message or name, status=status, error=name)
    if status == 404:
        raise RepoNotFound(message or "not found", status=status, error=name or "NotFound")
    raise XrpcError(message or "request failed", status=status, error=name or "BadRequest")


@contextmanager
def _translate_transport_errors(url: str) -> Iterator[None]:
    """Map httpx transport failures and timeouts to `UpstreamError`."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamError(f"{url}: timed out", error="Timeout") from exc
    except httpx.TimeoutException as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}", error="Timeout") from exc
    except (httpx.TransportError, httpx.TooManyRedirects) as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}: {exc}", error="ConnectionError") from exc


class XrpcClient:
    """Async XRPC client over one shared `httpx.AsyncClient` (owned unless one is passed in)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        timeout_s: float = 30.0,
        user_agent: str = "streamfill",
    ) -> None:
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            headers={"user-agent": user_agent},
            follow_redirects=False,
        )

    async def __aenter__(self) -> XrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying client if this object created it."""
        if self._owned:
            await self._client.aclose()

    async def _get_json(self, url: str, params: dict[str, Any]) -> Any:
        with _translate_transport_errors(url):
            response = await self._client.get(url, params=params, follow_redirects=True)
        _raise_for_response(response, response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(
                f"{url}: not JSON", status=response.status_code, error="InvalidResponse"
            ) from exc

    async def list_repos(self, host: str, cursor: str | None = None, limit: int = 1000) -> ListReposPage:
        """Fetch one page of `com.atproto.sync.listRepos` (limit is clamped to 1..1000)."""
        params: dict[str, Any] = {"limit": max(1, min(limit, 1000))}
        if cursor:
            params["cursor"] = cursor
        body = await self._get_json(_xrpc_url(host, LIST_REPOS), params)
        repos = body.get("repos") if isinstance(body, dict) else None
        if not isinstance(repos, list):
            raise UpstreamError("listRepos: missing repos array", status=200, error="InvalidResponse")
        next_cursor = body.get("cursor")
        # An empty page ends the listing even if the server (wrongly) sends a cursor.
        return ListReposPage(repos=repos, cursor=str(next_cursor) if next_cursor and repos else None)

    async def get_repo_status(self, url_or_host: str, did: str) -> RepoStatus:
        """Fetch `com.atproto.sync.getRepoStatus` for one DID."""
        body = await self._get_json(_xrpc_url(url_or_host, GET_REPO_STATUS), {"did": did})
        if not isinstance(body, dict) or "active" not in body:
            raise UpstreamError("getRepoStatus: missing active", status=200, error="InvalidResponse")
        known = {"did", "active", "status", "rev"}
        return RepoStatus(
            did=str(body.get("did", did)),
            active=bool(body["active"]),
            status=body.get("status"),
            rev=body.get("rev"),
            extra={k: v for k, v in body.items() if k not in known},
        )

    @asynccontextmanager
    async def get_repo(
        self,
        url_or_host: str,
        did: str,
        *,
        max_bytes: int,
        timeout_s: float,
        since: str | None = None,
        chunk_size: int = 64 * 1024,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream `com.atproto.sync.getRepo` as byte chunks, following redirects.

        `timeout_s` bounds the whole download (headers and body); `max_bytes` caps the body.
        """
        url = _xrpc_url(url_or_host, GET_REPO)
        params = {"did": did} | ({"since": since} if since else {})
        deadline = anyio.current_time() + timeout_s
        request = self._client.build_request("GET", url, params=params)
        with _translate_transport_errors(url):
            with anyio.fail_after(timeout_s):
                response = await self._client.send(request, stream=True, follow_redirects=True)
        try:
            await _check_repo_response(response, url, max_bytes, deadline)
            yield _body_chunks(response, url, max_bytes, deadline, chunk_size)
        finally:
            await response.aclose()


async def _check_repo_response(response: httpx.Response, url: str, max_bytes: int, deadline: float) -> None:
    """Raise for an error status or a declared length above the cap, before streaming the body."""
    if response.status_code >= 300:
        with _translate_transport_errors(url):
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                content = await _read_capped(response, _MAX_ERROR_BODY)
        _raise_for_response(response, content)
        raise UpstreamError(f"{url}: unexpected {response.status_code}", status=response.status_code)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RepoTooLarge(
            f"{declared} bytes > cap {max_bytes}", status=response.status_code, error="RepoTooLarge"
        )


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf)


async def _body_chunks(
    response: httpx.Response, url: str, max_bytes: int, deadline: float, chunk_size: int
) -> AsyncIterator[bytes]:
    """Yield body chunks, enforcing the byte cap and the overall deadline per read."""
    received = 0
    chunks = response.aiter_bytes(chunk_size).__aiter__()
    while True:
        remaining = deadline - anyio.current_time()
        with _translate_transport_errors(url):
            if remaining <= 0:
                raise TimeoutError
            # The cancel scope wraps one read only, never a yield to the caller.
            with anyio.fail_after(remaining):
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
        received += len(chunk)
        if received > max_bytes:
            raise RepoTooLarge(
                f"body exceeds cap {max_bytes} bytes", status=response.status_code, error="RepoTooLarge"
            )
        yield chunk

"""XRPC client for the sync endpoints a backfill needs: listHosts, listRepos, getRepo, getRepoStatus.

Every call goes through `atp.http.HttpClient`: a deadline for the whole call, a cap on decoded
body bytes, at most one gzip layer, redirects followed by hand and checked by the network policy
(`atp.netpolicy`). Caps and deadlines per endpoint:

=================  ==========================================  ===========================================
endpoint           body cap (decoded bytes)                    overall deadline
=================  ==========================================  ===========================================
listRepos          ``LIST_REPOS_MAX_BYTES`` (4 MiB: a page of   ``timeout_s``
                   1,000 repos is ~150 KB)
listHosts          ``LIST_REPOS_MAX_BYTES`` (a page of 1,000    ``timeout_s``
                   hosts is ~100 KB)
getRepoStatus      ``STATUS_MAX_BYTES`` (64 KiB)                ``timeout_s``
getRepo            ``max_bytes`` (BACKFILLER_MAX_REPO_BYTES)    ``timeout_s`` + one second per
                                                               ``min_bytes_per_s`` bytes received
error bodies       64 KiB (the rest is not read)               the call's
=================  ==========================================  ===========================================

Every failure leaves this module as one of the `atp.errors` classes, translated in one place
(`_raise_for_status`, and `atp.http` for the transport):

==============================================  ======================  =========
upstream answer                                 raised                  permanent
==============================================  ======================  =========
400 ``{"error": "RepoNotFound"}`` (or 404)      ``RepoNotFound``        yes
400 ``{"error": "RepoTakendown"}``              ``RepoTakendown``       yes
400 ``{"error": "RepoDeactivated"}``            ``RepoDeactivated``     yes
400 ``{"error": "RepoSuspended"}``              ``RepoSuspended``       yes
other 4xx but 408 and 429 (bad request,         ``RequestRejected``     yes
unknown error name, 401, 403, 410, ...)
429 (``Retry-After`` s / HTTP date,             ``RateLimited``         no
``ratelimit-reset`` epoch s; capped at          (``retry_after_s``)
``max_retry_after_s``)
408, 5xx, unparseable body                      ``UpstreamError``       no
timeout, deadline, connection refused/reset     ``UpstreamError``       no
getRepo body larger than ``max_bytes``          ``RepoTooLarge``        yes
other body above its cap, unrequested content   ``ResponseRejected``    yes
coding, more than 3 redirects, a 3xx without
``Location``
scheme or address refused by the policy         ``ForbiddenHost``       yes
==============================================  ======================  =========
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from atp.errors import (
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    RepoTooLarge,
    RequestRejected,
    ResponseRejected,
    UpstreamError,
    XrpcError,
)
from atp.http import Deadline, HttpClient, Reply
from atp.netpolicy import NetPolicy

__all__ = ["ListHostsPage", "ListReposPage", "RepoStatus", "XrpcClient", "base_url"]

LIST_REPOS = "com.atproto.sync.listRepos"
LIST_HOSTS = "com.atproto.sync.listHosts"
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
# A server asking for more than this is capped: one 429 must not park a host for a day.
DEFAULT_MAX_RETRY_AFTER_S = 300.0
LIST_REPOS_MAX_BYTES = 4 * 1024 * 1024
STATUS_MAX_BYTES = 64 * 1024
# Error bodies are small JSON; anything bigger is not an XRPC error body.
_MAX_ERROR_BODY = 64 * 1024
# getRepo: each byte received buys 1/min_bytes_per_s more seconds beyond timeout_s.
DEFAULT_MIN_BYTES_PER_S = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ListReposPage:
    """One page of `com.atproto.sync.listRepos`; `cursor` is None on the last page."""

    repos: list[dict[str, Any]]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class ListHostsPage:
    """One page of `com.atproto.sync.listHosts` (items unchecked); `cursor` is None on the last page."""

    hosts: list[Any]
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


def _parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float:
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
    return str(body.get("error") or "")[:200], str(body.get("message") or "")[:1000]


def _raise_for_status(reply: Reply, content: bytes, max_retry_after_s: float) -> None:
    """Translate a non-2xx reply into the `atp.errors` tree (see the module table)."""
    status = reply.status
    if status < 300:
        return
    name, message = _error_body(content)
    if status == 429:
        retry_after_s = min(_parse_retry_after(reply.headers), max_retry_after_s)
        error = name or "RateLimitExceeded"
        raise RateLimited(message or error, status=status, error=error, retry_after_s=retry_after_s)
    if status >= 500 or status == 408:
        raise UpstreamError(message or "server error", status=status, error=name or "InternalServerError")
    if name in _PERMANENT_BY_NAME:
        raise _PERMANENT_BY_NAME[name](message or name, status=status, error=name)
    if status == 404:
        raise RepoNotFound(message or "not found", status=status, error=name or "NotFound")
    if status < 400:  # a 3xx that is not a usable redirect
        raise ResponseRejected(f"unexpected {status}", status=status, error="UnexpectedRedirect")
    raise RequestRejected(message or "request failed", status=status, error=name or "BadRequest")


class XrpcClient:
    """Async XRPC client over one `HttpClient` (owned unless one is passed in)."""

    def __init__(
        self,
        http: HttpClient | None = None,
        *,
        policy: NetPolicy | None = None,
        timeout_s: float = 30.0,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        user_agent: str = "streamfill",
    ) -> None:
        self._owned = http is None
        self._http = http or HttpClient(policy, read_timeout_s=timeout_s, user_agent=user_agent)
        self._timeout_s = timeout_s
        self._max_retry_after_s = max_retry_after_s

    async def __aenter__(self) -> XrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owned:
            await self._http.aclose()

    async def _get_json(self, url: str, params: dict[str, Any], max_bytes: int) -> Any:
        deadline = Deadline.after(self._timeout_s)
        reply, content = await self._http.get(url, params, max_bytes=max_bytes, deadline=deadline)
        _raise_for_status(reply, content, self._max_retry_after_s)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{url}: not JSON", status=reply.status, error="InvalidResponse") from exc

    async def list_repos(self, host: str, cursor: str | None = None, limit: int = 1000) -> ListReposPage:
        """Fetch one page of `com.atproto.sync.listRepos` (limit is clamped to 1..1000)."""
        params: dict[str, Any] = {"limit": max(1, min(limit, 1000))}
        if cursor:
            params["cursor"] = cursor
        body = await self._get_json(_xrpc_url(host, LIST_REPOS), params, LIST_REPOS_MAX_BYTES)
        repos = body.get("repos") if isinstance(body, dict) else None
        if not isinstance(repos, list):
            raise UpstreamError("listRepos: missing repos array", status=200, error="InvalidResponse")
        next_cursor = body.get("cursor")
        # An empty page ends the listing even if the server (wrongly) sends a cursor.
        return ListReposPage(repos=repos, cursor=str(next_cursor) if next_cursor and repos else None)

    async def list_hosts(self, host: str, cursor: str | None = None, limit: int = 1000) -> ListHostsPage:
        """Fetch one page of a relay's `com.atproto.sync.listHosts` (limit is clamped to 1..1000)."""
        params: dict[str, Any] = {"limit": max(1, min(limit, 1000))}
        if cursor:
            params["cursor"] = cursor
        body = await self._get_json(_xrpc_url(host, LIST_HOSTS), params, LIST_REPOS_MAX_BYTES)
        hosts = body.get("hosts") if isinstance(body, dict) else None
        if not isinstance(hosts, list):
            raise UpstreamError("listHosts: missing hosts array", status=200, error="InvalidResponse")
        next_cursor = body.get("cursor")
        return ListHostsPage(hosts=hosts, cursor=str(next_cursor) if next_cursor and hosts else None)

    async def get_repo_status(self, url_or_host: str, did: str) -> RepoStatus:
        """Fetch `com.atproto.sync.getRepoStatus` for one DID."""
        body = await self._get_json(_xrpc_url(url_or_host, GET_REPO_STATUS), {"did": did}, STATUS_MAX_BYTES)
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
        min_bytes_per_s: float = DEFAULT_MIN_BYTES_PER_S,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream `com.atproto.sync.getRepo` as decoded byte chunks, following redirects.

        The headers must arrive within `timeout_s`; the whole download must end within
        `timeout_s` plus one second per `min_bytes_per_s` bytes received (0: no extension), so a
        large repo that keeps flowing reaches `max_bytes` (RepoTooLarge, permanent) instead of
        timing out again on every retry.
        """
        url = _xrpc_url(url_or_host, GET_REPO)
        params = {"did": did} | ({"since": since} if since else {})
        deadline = Deadline.after(timeout_s, min_bytes_per_s=min_bytes_per_s)
        async with self._http.open(url, params, deadline=deadline) as reply:
            if reply.status >= 300:
                content = await reply.read_error_body(_MAX_ERROR_BODY, deadline)
                _raise_for_status(reply, content, self._max_retry_after_s)
            async with aclosing(reply.chunks(max_bytes, deadline, too_large=RepoTooLarge)) as chunks:
                yield chunks

"""Shared bits of the devnet's XRPC servers: error bodies, listRepos paging, repo entries."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devnet.state import Account

__all__ = ["Urls", "page_of", "parse_limit", "repo_entry", "xrpc_error"]

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 500


@dataclass(slots=True)
class Urls:
    """Base URLs of every devnet server, filled in once their ports are bound."""

    relay: str = ""
    plc: str = ""
    labeler: str = ""
    pds: list[str] = field(default_factory=list)


def xrpc_error(
    error: str, message: str, status: int = 400, headers: dict[str, str] | None = None
) -> web.Response:
    """An XRPC error response: `{"error", "message"}` JSON, as real PDSes and relays send it."""
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def parse_limit(request: web.Request, default: int = DEFAULT_LIST_LIMIT) -> int:
    """listRepos/listHosts `limit` (1..1000); out of range is an InvalidRequest like on real hosts."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise web.HTTPBadRequest(
            text='{"error": "InvalidRequest", "message": "limit must be an integer in 1..1000"}',
            content_type="application/json",
        )
    return int(raw)


def account_id(account: Account) -> int:
    """The relay's opaque, stable account id (what listRepos cursors hold)."""
    return account.index + 1


def page_of(
    accounts: Sequence[Account], cursor: str | None, limit: int
) -> tuple[int, list[Account], str | None]:
    """(page index, accounts after `cursor`, next cursor); accounts must be in id order."""
    after = int(cursor) if cursor and cursor.isdigit() else 0
    start = bisect.bisect_right(accounts, after, key=account_id)
    page = list(accounts[start : start + limit])
    # Like indigo: a full page always carries a cursor, so the end shows up as an empty page.
    next_cursor = str(account_id(page[-1])) if len(page) == limit else None
    return start // limit, page, next_cursor


def repo_entry(account: Account, *, as_relay: bool) -> dict[str, Any]:
    """One listRepos item; the relay still believes a 'missing' repo is active."""
    active = account.status == "active" and (as_relay or not account.missing)
    entry: dict[str, Any] = {"did": account.did, "head": account.head, "rev": account.rev, "active": active}
    if not active:
        entry["status"] = account.status
    return entry

"""The relay: paged listRepos, listHosts, getRepo as a redirect to the PDS, getRepoStatus, the firehose,
and the devnet's own endpoints (`/truth`, `/truth/write`, `/stats`, `/control/...`).

Like the real relay, its listRepos leaves out some accounts (`DevnetConfig.relay_omit_fraction`):
only their PDS's listRepos lists them. listHosts lists the PDS hosts (but `Faults.hidden_hosts`),
then `Faults.extra_hosts` as they are (dead or malformed items)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from devnet.faults import Faults
from devnet.http import Urls, page_of, parse_limit, repo_entry, xrpc_error
from devnet.pds import repo_status
from devnet.state import World
from devnet.streams import close_streams_on_shutdown, serve_stream

__all__ = ["Control", "relay_app"]


class Control(Protocol):
    """What the relay's devnet endpoints need from the running devnet."""

    def truth(self) -> list[dict[str, Any]]: ...
    def write_truth(self, path: str | Path | None = None) -> tuple[Path, int]: ...
    def stats(self) -> dict[str, Any]: ...
    def pause_activity(self) -> None: ...
    def resume_activity(self) -> None: ...
    def step(self, n: int = 1) -> list[str]: ...


def _xrpc_routes(app: web.Application, world: World, faults: Faults, urls: Urls) -> None:
    async def list_repos(request: web.Request) -> web.Response:
        cursor = request.query.get("cursor")
        listed = [a for a in world.accounts if not a.relay_omitted]
        page_index, page, next_cursor = page_of(listed, cursor, parse_limit(request))
        if faults.list_page_fails(page_index, cursor):
            return xrpc_error("InternalServerError", "Internal Server Error", status=500)
        world.count("relay.list_repos")
        body: dict[str, Any] = {"repos": [repo_entry(a, as_relay=True) for a in page]}
        if next_cursor:
            body["cursor"] = next_cursor
        return web.json_response(body)

    async def list_hosts(request: web.Request) -> web.Response:
        return _list_hosts(request, world, faults, urls)

    async def get_repo(request: web.Request) -> web.Response:
        did = request.query.get("did", "")
        account = world.by_did.get(did)
        if account is None:
            return xrpc_error("RepoNotFound", f"repo not found: {did}")
        # Relays do not store repos: they send the client to the account's PDS.
        raise web.HTTPFound(f"{urls.pds[account.pds]}/xrpc/com.atproto.sync.getRepo?{request.query_string}")

    async def get_repo_status(request: web.Request) -> web.Response:
        account = world.by_did.get(request.query.get("did", ""))
        if account is None:
            return xrpc_error("RepoNotFound", "repo not found")
        return web.json_response(repo_status(account))

    async def subscribe(request: web.Request) -> web.StreamResponse:
        return await serve_stream(request, world.firehose, faults)

    app.router.add_get("/xrpc/com.atproto.sync.listRepos", list_repos)
    app.router.add_get("/xrpc/com.atproto.sync.listHosts", list_hosts)
    app.router.add_get("/xrpc/com.atproto.sync.getRepo", get_repo)
    app.router.add_get("/xrpc/com.atproto.sync.getRepoStatus", get_repo_status)
    app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", subscribe)


def _list_hosts(request: web.Request, world: World, faults: Faults, urls: Urls) -> web.Response:
    if faults.fail_list_hosts:
        faults.note("list_hosts_503")
        return xrpc_error("ServiceUnavailable", "Service Unavailable", status=503)
    world.count("relay.list_hosts")
    limit = parse_limit(request, default=200)
    return web.json_response(hosts_page(world, faults, urls, request.query.get("cursor", ""), limit))


def hosts_page(world: World, faults: Faults, urls: Urls, cursor: str, limit: int) -> dict[str, Any]:
    """A listHosts body: the PDS hosts but the hidden ones, then the extra items; cursor = an offset."""
    shown = [(index, url) for index, url in enumerate(urls.pds) if index not in faults.hidden_hosts]
    hosts: list[object] = [host_entry(world, index, url) for index, url in shown]
    hosts += faults.extra_hosts
    start = int(cursor) if cursor.isdigit() else 0
    body: dict[str, Any] = {"hosts": hosts[start : start + limit]}
    if start + limit < len(hosts):
        body["cursor"] = str(start + limit)
    return body


def host_entry(world: World, index: int, url: str) -> dict[str, Any]:
    """One listHosts item for PDS `index`: its hostname (host:port, no scheme), seq and account count."""
    return {
        "hostname": url.split("://", 1)[-1],
        "seq": world.firehose.last_seq,
        "accountCount": sum(1 for a in world.accounts if a.pds == index and not a.missing),
        "status": "active",
    }


def _devnet_routes(app: web.Application, control: Control) -> None:
    async def truth(request: web.Request) -> web.Response:
        body = b"".join(orjson.dumps(line) + b"\n" for line in control.truth())
        return web.Response(body=body, content_type="application/x-ndjson")

    async def truth_write(request: web.Request) -> web.Response:
        try:
            path, lines = control.write_truth(request.query.get("path"))
        except ValueError as exc:
            return xrpc_error("InvalidRequest", str(exc))
        return web.json_response({"path": str(path), "lines": lines})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(control.stats())

    async def pause(request: web.Request) -> web.Response:
        control.pause_activity()
        return web.json_response({"activity": "paused"})

    async def resume(request: web.Request) -> web.Response:
        control.resume_activity()
        return web.json_response({"activity": "running"})

    async def step(request: web.Request) -> web.Response:
        count = int(request.query.get("n", "1"))
        return web.json_response({"events": control.step(count)})

    app.router.add_get("/truth", truth)
    app.router.add_post("/truth/write", truth_write)
    app.router.add_get("/stats", stats)
    app.router.add_post("/control/pause", pause)
    app.router.add_post("/control/resume", resume)
    app.router.add_post("/control/step", step)


def relay_app(world: World, faults: Faults, urls: Urls, control: Control) -> web.Application:
    """HTTP app of the relay, including the devnet's truth, stats and control endpoints."""
    app = web.Application()
    _xrpc_routes(app, world, faults, urls)
    _devnet_routes(app, control)
    close_streams_on_shutdown(app)
    return app

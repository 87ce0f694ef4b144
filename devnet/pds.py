"""A PDS host: getRepo (streamed CAR), getRepoStatus and listRepos for the accounts it hosts.

Error bodies and messages are those of the reference PDS (`assertRepoAvailability`); a host an
account migrated away from says, as the reference PDS does, that the repo is deactivated there,
and its listRepos still lists it (`active: false, status: "deactivated"`, at the rev it left with).
getRepo faults: 429 with `Retry-After` on a share of calls, slow streaming, hanging after half
the body, truncated bodies and commits with a bad signature.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from devnet.faults import Faults
from devnet.http import page_of, parse_limit, repo_entry, xrpc_error
from devnet.repos import bad_signature_car, repo_car
from devnet.state import Account, World

__all__ = ["pds_app"]

CAR_TYPE = "application/vnd.ipld.car"
CHUNK = 64 * 1024


def _unavailable(account: Account | None, did: str, pds: int) -> web.Response | None:
    """The reference PDS's answer for a repo it cannot serve, or None when it can."""
    if account is not None and account.pds != pds and pds in account.moved_from:
        # What the reference PDS answers for an account that migrated away: it is deactivated here.
        return xrpc_error("RepoDeactivated", f"Repo has been deactivated: {did}")
    if account is None or account.pds != pds or account.missing or account.status == "deleted":
        return xrpc_error("RepoNotFound", f"Could not find repo for DID: {did}")
    if account.status == "takendown":
        return xrpc_error("RepoTakendown", f"Repo has been takendown: {did}")
    if account.status == "deactivated":
        return xrpc_error("RepoDeactivated", f"Repo has been deactivated: {did}")
    if account.status == "suspended":
        return xrpc_error("RepoSuspended", f"Repo has been suspended: {did}")
    return None


def _rate_limited(faults: Faults) -> web.Response:
    headers = {
        "Retry-After": str(faults.retry_after_s),
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "0",
        "RateLimit-Policy": "100;w=300",
    }
    return xrpc_error("RateLimitExceeded", "Rate Limit Exceeded", status=429, headers=headers)


def _body(world: World, faults: Faults, account: Account) -> bytes:
    """The CAR to serve now: cached for the current state, or a faulty variant."""
    if account.did in faults.bad_sig_dids:
        faults.note("bad_signature")
        return bad_signature_car(account, world.blocks)
    if account.car is None:
        account.car = repo_car(account, world.blocks)
    if account.did in faults.truncate_dids:
        faults.note("truncated_car")
        return account.car[: len(account.car) // 2]
    return account.car


async def _stream(request: web.Request, body: bytes, *, slow_s: float, hang: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": CAR_TYPE})
    await response.prepare(request)
    if hang:
        await response.write(body[: max(1, len(body) // 2)])
        await asyncio.Event().wait()  # never set: the client's timeout (or server shutdown) ends this
    for offset in range(0, len(body), CHUNK):
        if slow_s:
            await asyncio.sleep(slow_s)
        await response.write(body[offset : offset + CHUNK])
    await response.write_eof()
    return response


async def _get_repo(request: web.Request, world: World, faults: Faults, index: int) -> web.StreamResponse:
    did = request.query.get("did", "")
    if not did:
        return xrpc_error("InvalidRequest", 'Error: Params must have the property "did"')
    account = world.by_did.get(did)
    refusal = _unavailable(account, did, index)
    if refusal is not None or account is None:
        return refusal or xrpc_error("RepoNotFound", f"Could not find repo for DID: {did}")
    if faults.rate_limited(index):
        return _rate_limited(faults)
    # The body is an immutable snapshot: later commits do not change a download in flight.
    body = _body(world, faults, account)
    hang, slow = faults.hangs(did, index), faults.slow(did, index)
    if hang or slow:
        faults.note("hang" if hang else "slow")
    world.count("pds.get_repo")
    return await _stream(request, body, slow_s=faults.slow_delay_s if slow else 0.0, hang=hang)


def pds_app(world: World, faults: Faults, index: int) -> web.Application:
    """HTTP app of PDS number `index`."""
    app = web.Application()

    async def get_repo(request: web.Request) -> web.StreamResponse:
        return await _get_repo(request, world, faults, index)

    async def get_repo_status(request: web.Request) -> web.Response:
        did = request.query.get("did", "")
        account = world.by_did.get(did)
        if account is not None and account.pds != index and index in account.moved_from:
            return web.json_response({"did": did, "active": False, "status": "deactivated"})
        if account is None or account.pds != index or account.missing:
            return xrpc_error("RepoNotFound", f"Could not find user: {did}")
        return web.json_response(repo_status(account))

    async def list_repos(request: web.Request) -> web.Response:
        listed = [a for a in world.accounts if (a.pds == index and not a.missing) or index in a.moved_from]
        if faults.pds_list_fails(index, request.query.get("cursor")):
            return xrpc_error("InternalServerError", "Internal Server Error", status=500)
        _, page, cursor = page_of(listed, request.query.get("cursor"), parse_limit(request))
        body: dict[str, object] = {"repos": [_list_entry(a, index) for a in page]}
        if cursor:
            body["cursor"] = cursor
        return web.json_response(body)

    app.router.add_get("/xrpc/com.atproto.sync.getRepo", get_repo)
    app.router.add_get("/xrpc/com.atproto.sync.getRepoStatus", get_repo_status)
    app.router.add_get("/xrpc/com.atproto.sync.listRepos", list_repos)
    return app


def _list_entry(account: Account, pds: int) -> dict[str, object]:
    """A listRepos item of PDS `pds`: a host the account left lists it deactivated, as it left it."""
    left = account.moved_from.get(pds)
    if left is None or account.pds == pds:
        return repo_entry(account, as_relay=False)
    return {"did": account.did, "head": left.head, "rev": left.rev, "active": False, "status": "deactivated"}


def repo_status(account: Account) -> dict[str, object]:
    """getRepoStatus body: `rev` only while active, `status` only while inactive."""
    if account.status == "active":
        return {"did": account.did, "active": True, "rev": account.rev}
    return {"did": account.did, "active": False, "status": account.status}

"""The labeler: labels (some negated later, some with an expiry) on records and accounts.

Expiries are either already past at emission (cts - 1 h) or far in the future (cts + 10 years), so
any consumer clock between those agrees with the ground truth about which labels are live.
"""

from __future__ import annotations

import datetime as dt
import random

from aiohttp import web

from atp.cbor import cid_str
from devnet.events import emit_labels
from devnet.faults import Faults
from devnet.state import Label, World
from devnet.streams import close_streams_on_shutdown, serve_stream

__all__ = ["LabelMaker", "labeler_app"]

SUBSCRIBE_LABELS = "/xrpc/com.atproto.label.subscribeLabels"
LABEL_VALUES = ("spam", "rude", "nudity", "porn", "graphic-media", "!hide", "!warn", "misleading")
_NEGATE_SHARE = 0.25
_EXPIRED_SHARE = 0.1
_EXPIRING_SHARE = 0.1


def _shift(iso: str, **delta: float) -> str:
    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC) + dt.timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class LabelMaker:
    """Chooses what to label next from the current world."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self._world = world
        self._rng = rng

    def _target(self) -> tuple[str, str | None] | None:
        """(uri, cid) of a record of an active account, or (did, None) for an account label."""
        accounts = [a for a in self._world.accounts if a.active and a.records]
        if not accounts:
            return None
        account = self._rng.choice(accounts)
        if self._rng.random() < 0.2:
            return account.did, None
        path = self._rng.choice(list(account.records))
        return account.uri(path), cid_str(account.records[path].cid)

    def _new_label(self) -> Label | None:
        target = self._target()
        if target is None:
            return None
        uri, cid = target
        cts = self._world.clock.iso(self._world.clock.tick())
        roll = self._rng.random()
        exp = None
        if roll < _EXPIRED_SHARE:
            exp = _shift(cts, hours=-1)
        elif roll < _EXPIRED_SHARE + _EXPIRING_SHARE:
            exp = _shift(cts, days=3650)
        val = self._rng.choice(LABEL_VALUES)
        return Label(src=self._world.labeler_did, uri=uri, val=val, cts=cts, cid=cid, exp=exp)

    def _negation(self) -> Label | None:
        if not self._world.live_labels:
            return None
        key = self._rng.choice(sorted(self._world.live_labels))
        old = self._world.live_labels[key]
        cts = self._world.clock.iso(self._world.clock.tick())
        return Label(src=old.src, uri=old.uri, val=old.val, cts=cts, cid=old.cid, neg=True)

    def step(self) -> bool:
        """Emit one #labels frame (a new label or a negation); False if nothing can be labelled."""
        negate = self._rng.random() < _NEGATE_SHARE
        label = (self._negation() if negate else None) or self._new_label()
        if label is None:
            return False
        emit_labels(self._world, [label])
        return True


def labeler_app(world: World, faults: Faults) -> web.Application:
    """HTTP app of the labeler: subscribeLabels with cursor replay."""
    app = web.Application()

    async def subscribe(request: web.Request) -> web.StreamResponse:
        return await serve_stream(request, world.labels, faults)

    app.router.add_get(SUBSCRIBE_LABELS, subscribe)
    close_streams_on_shutdown(app)
    return app

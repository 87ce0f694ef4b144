"""Labeler mode: `subscribeLabels` frames -> one `label_live` entry per `#labels` frame."""

from __future__ import annotations

import logging

from atp import AtpError
from atp.frames import ErrorFrame, InfoFrame, LabelsFrame, decode_frame
from schemas import Label, LabelBatch, contract_for
from streams import StreamNames, dlq_key
from workers.ingester.eventstream import Converted
from workers.ingester.seqguard import control_of, dead_frame_fields

log = logging.getLogger("streamfill.ingester.labels")
_LABELS = contract_for(StreamNames.LABEL_LIVE)  # what a converter writes


class LabelConverter:
    """Converts subscribeLabels frames from one labeler host."""

    def __init__(self, host: str, stream: str) -> None:
        self._host = host
        self._dlq = dlq_key(stream)

    async def convert(self, frame: bytes) -> Converted:
        try:
            decoded = decode_frame(frame)
            if isinstance(decoded, LabelsFrame):
                labels = [_label(raw) for raw in decoded.labels]
                batch = LabelBatch(seq=decoded.seq, labels=labels, src_host=self._host)
                return Converted([_LABELS.encode(batch)], seq=decoded.seq)
        except (AtpError, TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            fields = dead_frame_fields(frame, self._host, "undecodable-label-frame", error, None)
            return Converted(extra=[(self._dlq, fields)])
        if isinstance(decoded, InfoFrame | ErrorFrame):
            log.warning("labeler says", extra={"host": self._host, "frame": repr(decoded)})
            return Converted(control=control_of(decoded))
        return Converted()


def _label(raw: dict[str, object]) -> Label:
    cid = raw.get("cid")
    exp = raw.get("exp")
    return Label(
        src=str(raw["src"]),
        uri=str(raw["uri"]),
        val=str(raw["val"]),
        cts=str(raw["cts"]),
        cid=str(cid) if cid is not None else None,
        neg=bool(raw.get("neg", False)),
        exp=str(exp) if exp is not None else None,
    )

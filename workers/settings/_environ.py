"""Nothing in the environment is silently ignored: names streamfill refuses, names it does not know.

A name from an rsky deployment that streamfill does not honour is refused at start, with what
to use instead. A variable under one of our prefixes that no setting reads (a typo, a setting
of another version) gets a warning naming the nearest known name.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping

from workers._errors import SettingError
from workers.settings._declare import Retired

# Variables under these prefixes are ours: an unknown one is a warning.
WATCHED_PREFIXES = ("INGESTER_", "BACKFILLER_", "INDEXER_", "REPLAYER_", "STREAMFILL_")
# ... except the test suite's own (tests/conftest.py), which worker processes inherit.
IGNORED_PREFIXES = ("STREAMFILL_TEST_",)


def refuse_retired(retired: Iterable[Retired], environ: Mapping[str, str]) -> None:
    """Raise SettingError for the first retired name set to anything but a harmless value."""
    for r in retired:
        text = environ.get(r.env, "").strip()
        if text and text.lower() not in r.harmless:
            raise SettingError(f"{r.env} is not read by streamfill: {r.instead}")


def unknown_names(environ: Mapping[str, str], known: Collection[str]) -> list[str]:
    """One warning per watched variable no setting reads, naming the nearest known name."""
    warnings = []
    for name in sorted(environ):
        if not name.startswith(WATCHED_PREFIXES) or name.startswith(IGNORED_PREFIXES) or name in known:
            continue
        nearest = _nearest(name, known)
        hint = f" (did you mean {nearest}?)" if nearest else ""
        warnings.append(f"{name} is not a streamfill setting and is ignored{hint}")
    return warnings


def _nearest(name: str, known: Collection[str]) -> str | None:
    """The known name closest to `name`: compared after the shared prefix first (every
    BACKFILLER_ name looks alike), then whole (another worker's prefix)."""
    prefix = next(p for p in WATCHED_PREFIXES if name.startswith(p))
    same = {k[len(prefix) :]: k for k in known if k.startswith(prefix)}
    hit = difflib.get_close_matches(name[len(prefix) :], list(same), n=1, cutoff=0.6)
    if hit:
        return same[hit[0]]
    whole = difflib.get_close_matches(name, list(known), n=1, cutoff=0.85)
    return whole[0] if whole else None

"""`campaign plan`: the repos of a scope, cut into stages, with estimates; plan.json and plan.md.

Planning changes nothing in the pipeline: it lists repos, reads PostgreSQL (`--scope stale`),
fetches a small sample of repos for the estimates, writes the two files, and stores the plan
as a campaign in state `planned` so that `apply` can run it from any machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atp import AtpError
from workers._errors import SettingError
from workers.campaign.discover import Net, Repo, read_did_file, stale

DEFAULT_STAGES = "1%,10%,100%"
DEFAULT_RATE = "600/min"
DEFAULT_SAMPLE = 5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Scope:
    """A parsed `--scope`: kind is all, hosts, dids or stale."""

    kind: str
    hosts: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def text(self) -> str:
        if self.kind == "hosts":
            return "hosts=" + ",".join(self.hosts)
        if self.kind == "dids":
            return f"dids={self.path}"
        return self.kind


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SettingError(f"campaign name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def parse_scope(text: str) -> Scope:
    if text in ("all", "stale"):
        return Scope(text)
    kind, _, value = text.partition("=")
    if kind == "hosts" and value:
        hosts = tuple(h.strip() for h in value.split(",") if h.strip())
        if hosts:
            return Scope("hosts", hosts=hosts)
    if kind == "dids" and value:
        return Scope("dids", path=Path(value))
    raise SettingError(f"--scope {text!r}: expected all, stale, hosts=H1,H2 or dids=FILE")


def parse_stages(text: str) -> list[float]:
    """`1%,10%,100%` -> [1.0, 10.0, 100.0]: increasing, ending at 100 %."""
    try:
        percents = [float(p.strip().removesuffix("%")) for p in text.split(",")]
    except ValueError:
        raise SettingError(f"--stages {text!r}: expected percentages like 1%,10%,100%") from None
    increasing = all(a < b for a, b in zip([0.0, *percents], percents, strict=False))
    if not percents or not increasing or percents[-1] != 100:
        raise SettingError(f"--stages {text!r}: percentages must increase and end at 100%")
    return percents


def parse_rate(text: str) -> float:
    """`N/min`, `N/s` or `N` (per minute) -> repos per minute."""
    value, _, unit = text.partition("/")
    per = {"": 1.0, "min": 1.0, "m": 1.0, "s": 60.0, "sec": 60.0, "h": 1 / 60}.get(unit.strip())
    try:
        rate = float(value) * per if per is not None else -1.0
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 10_000_000:
        raise SettingError(f"--rate {text!r}: expected a positive N/min (or N/s)")
    return rate


def stage_ends(total: int, percents: list[float]) -> list[int]:
    """Cumulative repo counts per stage; every stage gets at least one repo while any are left."""
    ends: list[int] = []
    for p in percents:
        end = max(math.ceil(total * p / 100), (ends[-1] + 1) if ends else 1)
        ends.append(min(end, total))
    return ends


def order(name: str, repos: list[Repo]) -> list[Repo]:
    """A stable pseudo-random order, so that the first stages sample every host, not the first listed."""
    return sorted(repos, key=lambda r: hashlib.sha1(f"{name}\0{r.did}".encode()).digest())


async def discover(
    scope: Scope, net: Net, relays: tuple[str, ...], conn: Any, mode: str = "both"
) -> tuple[list[Repo], int]:
    """(repos, inactive repos skipped) of a scope; `mode` is relay, hosts or both (CAMPAIGN_DISCOVERY)."""
    if scope.kind == "dids":
        assert scope.path is not None
        return read_did_file(scope.path, relays[0] if relays else ""), 0
    if scope.kind == "hosts":
        return await net.list_hosts(scope.hosts)
    if not relays:
        raise SettingError(
            f"--scope {scope.kind} pages the relays: set CAMPAIGN_RELAY_HOSTS (or --relay-hosts)"
        )
    listed, inactive = await net.discover(relays, mode)
    if scope.kind == "all":
        return listed, inactive
    return await stale(conn, listed), inactive


async def sample(net: Net, repos: list[Repo], size: int) -> list[dict[str, Any]]:
    """Fetch the first `size` repos of the plan: their records and CAR bytes (or the error)."""
    out: list[dict[str, Any]] = []
    for repo in repos[:size]:
        try:
            pds = await net.pds_of(repo.did)
            nbytes, records, _ = await net.fetch_records(repo.did)
            out.append({"did": repo.did, "pds": pds, "records": len(records), "bytes": nbytes})
        except (AtpError, OSError, ValueError) as exc:
            out.append({"did": repo.did, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return out


def build(
    name: str,
    scope: Scope,
    repos: list[Repo],
    inactive: int,
    percents: list[float],
    rate_per_min: float,
    undo: bool,
    samples: list[dict[str, Any]],
) -> dict[str, Any]:
    """The plan document (plan.json)."""
    ordered = order(name, repos)
    ends = stage_ends(len(ordered), percents)
    hosts = Counter(r.host for r in ordered)
    ok = [s for s in samples if "error" not in s]
    mean_records = sum(s["records"] for s in ok) / len(ok) if ok else 0.0
    mean_bytes = sum(s["bytes"] for s in ok) / len(ok) if ok else 0.0
    stage_of = [next(i for i, end in enumerate(ends) if pos < end) for pos in range(len(ordered))]
    return {
        "name": name,
        "scope": scope.text,
        "created_at": round(time.time(), 3),
        "repos_total": len(ordered),
        "inactive_skipped": inactive,
        "rate_per_min": rate_per_min,
        "undo": undo,
        "stages": [
            {"stage": i + 1, "percent": p, "repos": end - (ends[i - 1] if i else 0), "cumulative": end}
            for i, (p, end) in enumerate(zip(percents, ends, strict=True))
        ],
        "hosts": [
            {"host": h, "repos": n, "share": round(n / len(ordered), 4)} for h, n in hosts.most_common()
        ],
        "estimate": {
            "sample": samples,
            "records": round(mean_records * len(ordered)),
            "bytes": round(mean_bytes * len(ordered)),
            "minutes_at_rate": round(len(ordered) / rate_per_min, 2),
        },
        "repos": [asdict(r) | {"stage": stage_of[i] + 1} for i, r in enumerate(ordered)],
    }


def markdown(plan: dict[str, Any]) -> str:
    """plan.md: what an operator reviews before `apply`."""
    est = plan["estimate"]
    lines = [
        f"# Campaign `{plan['name']}`",
        "",
        f"- scope: `{plan['scope']}`; repos: **{plan['repos_total']}** "
        f"({plan['inactive_skipped']} inactive skipped)",
        f"- rate: {plan['rate_per_min']:g} repos/min; estimated time at that rate: "
        f"{est['minutes_at_rate']:g} min (plus the time spent at gates)",
        f"- estimated records: {est['records']:,}; estimated bytes: {est['bytes']:,} "
        f"(mean of {sum('error' not in s for s in est['sample'])} sampled repos)",
        f"- undo: {'yes: the indexer keeps prior rows; `rollback` restores them' if plan['undo'] else 'no'}",
        "",
        "| stage | percent | repos | cumulative |",
        "|---|---|---|---|",
        *(f"| {s['stage']} | {s['percent']:g}% | {s['repos']} | {s['cumulative']} |" for s in plan["stages"]),
        "",
        "| host | repos | share |",
        "|---|---|---|",
        *(f"| {h['host']} | {h['repos']} | {h['share']:.1%} |" for h in plan["hosts"]),
        "",
        "Hosts above are where the repos were listed; each sampled repo names its PDS.",
        "",
        "Sample:",
        "",
        *(
            f"- {s['did']}: "
            + (s["error"] if "error" in s else f"{s['records']} records, {s['bytes']} bytes at {s['pds']}")
            for s in est["sample"]
        ),
        "",
        "First repos of each stage:",
        "",
    ]
    for stage in plan["stages"]:
        first = [r["did"] for r in plan["repos"] if r["stage"] == stage["stage"]][:10]
        lines.append(
            f"- stage {stage['stage']}: " + ", ".join(first) + (" ..." if stage["repos"] > 10 else "")
        )
    return "\n".join(lines) + "\n"


def write(out: Path, plan: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "plan.json", out / "plan.md"
    json_path.write_text(json.dumps(plan, indent=1) + "\n")
    md_path.write_text(markdown(plan))
    return json_path, md_path


def stored_fields(plan: dict[str, Any], out: Path, percents: list[float], pass_mark: float) -> dict[str, str]:
    """The campaign hash of a new plan (state.py)."""
    return {
        "name": plan["name"],
        "scope": plan["scope"],
        "stages": json.dumps([s["cumulative"] for s in plan["stages"]]),
        "percents": json.dumps(percents),
        "rate_per_min": str(plan["rate_per_min"]),
        "undo": "1" if plan["undo"] else "0",
        "out_dir": str(out.resolve()),
        "pass_mark": str(pass_mark),
        "created_at": str(plan["created_at"]),
        "stage": "0",
        "cursor": "0",
        "batches": "0",
    }

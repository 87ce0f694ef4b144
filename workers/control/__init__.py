"""The control plane: live overrides of settings with validity windows, worker heartbeats, and
the operator commands that read and change them (`config set|revert|show|history`, `workers`)."""

from workers.control.agent import HEARTBEAT_S, HEARTBEAT_TTL_S, Agent, heartbeats, plain
from workers.control.live import POLL_S, LiveSettings
from workers.control.overrides import Override, OverrideStore, parse_duration, window

__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_TTL_S",
    "POLL_S",
    "Agent",
    "LiveSettings",
    "Override",
    "OverrideStore",
    "heartbeats",
    "parse_duration",
    "plain",
    "window",
]

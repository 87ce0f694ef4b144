"""The settings layer: every setting declared once (flag, environment name and aliases, type,
default, bounds, help), read in one place (live override > flag > environment > default), with
cross-setting rules and the rsky names streamfill honours or refuses.

Worker kinds declare a `Spec` next to their config dataclass (`workers/<kind>/config.py`);
`workers._specs` collects them and is what commands call at start.
"""

from workers.settings._common import (
    DEFAULT_GRACE_S,
    allow_private_hosts_setting,
    consumer_settings,
    partition_settings,
    process_settings,
    ready_settings,
    redis_settings,
    throttle_rule,
    throttle_settings,
)
from workers.settings._declare import Retired, Rule, Setting, Spec, Values, at_most, below, differ
from workers.settings._environ import refuse_retired, unknown_names
from workers.settings._flags import add_flags, describe, positive_integer, positive_number
from workers.settings._kinds import (
    BOOL,
    DIRECTORY,
    FLOAT,
    HOSTS,
    HTTP_URL,
    INT,
    LOG_LEVEL,
    NAME,
    NAMES,
    POSTGRES_URL,
    PREFIX,
    REDIS_URL,
    TEXT,
    Kind,
    choice,
    masked,
)
from workers.settings._reference import reference, rsky_table, show, spec_table
from workers.settings._resolve import Effective, Resolved, Source, resolve

__all__ = [
    "BOOL",
    "DEFAULT_GRACE_S",
    "DIRECTORY",
    "FLOAT",
    "HOSTS",
    "HTTP_URL",
    "INT",
    "LOG_LEVEL",
    "NAME",
    "NAMES",
    "POSTGRES_URL",
    "PREFIX",
    "REDIS_URL",
    "TEXT",
    "Effective",
    "Kind",
    "Resolved",
    "Retired",
    "Rule",
    "Setting",
    "Source",
    "Spec",
    "Values",
    "add_flags",
    "allow_private_hosts_setting",
    "at_most",
    "below",
    "choice",
    "consumer_settings",
    "describe",
    "differ",
    "masked",
    "partition_settings",
    "positive_integer",
    "positive_number",
    "process_settings",
    "ready_settings",
    "redis_settings",
    "reference",
    "refuse_retired",
    "resolve",
    "rsky_table",
    "show",
    "spec_table",
    "throttle_rule",
    "throttle_settings",
    "unknown_names",
]

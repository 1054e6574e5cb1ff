"""Configuration: ``clusters.toml`` -> frozen, validated dataclasses.

``model`` holds the values, ``parse`` validates a document (every problem
with its key path) and reads the file, ``redisurl`` parses a Redis URL. The
names below are the package's interface; nothing else reads TOML.
"""

from georouter.config.diff import ConfigChange, compare
from georouter.config.files import load, load_version
from georouter.config.model import (
    AllDown,
    ClientIpHeader,
    Cluster,
    Config,
    GeoipSettings,
    HealthSettings,
    LearnedSource,
    LimitsSettings,
    Network,
    Override,
    PinnedDown,
    ProxySettings,
    RouterMode,
    RouterSettings,
    Rule,
    SessionSettings,
    SessionSource,
    TenantHome,
    TenantSettings,
)
from georouter.config.parse import parse

__all__ = [
    "AllDown",
    "ClientIpHeader",
    "Cluster",
    "Config",
    "ConfigChange",
    "GeoipSettings",
    "HealthSettings",
    "LearnedSource",
    "LimitsSettings",
    "Network",
    "Override",
    "PinnedDown",
    "ProxySettings",
    "RouterMode",
    "RouterSettings",
    "Rule",
    "SessionSettings",
    "SessionSource",
    "TenantHome",
    "TenantSettings",
    "compare",
    "load",
    "load_version",
    "parse",
]

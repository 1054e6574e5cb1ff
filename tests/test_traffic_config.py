"""The traffic-policy keys of clusters.toml: [[rules]], [[overrides]], bias_km, weight,
router.tie_km and geoip.max_accuracy_km; every problem named by its key path."""

from __future__ import annotations

import ipaddress
import tomllib

import pytest

from georouter.config import Override, Rule, parse
from georouter.config.diff import compare
from georouter.errors import ConfigError

CLUSTERS = """
[[clusters]]
name = "eu-west"
url = "https://eu.example.net"
lat = 53.35
lon = -6.26

[[clusters]]
name = "us-east"
url = "https://us.example.net"
lat = 38.94
lon = -77.45
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        # First: a bare key after [[clusters]] would belong to the last cluster.
        parse(tomllib.loads(text + "\n" + CLUSTERS))
    return [str(p) for p in info.value.problems]


def test_rules_and_overrides_are_read_into_frozen_values() -> None:
    config = parse(
        tomllib.loads(
            CLUSTERS
            + """
[router]
tie_km = 150

[geoip]
max_accuracy_km = 250

[[rules]]
name = "eu-residency"
countries = ["de", "FR"]
continents = ["eu"]
clusters = ["eu-west"]
strict = true

[[rules]]
cidrs = ["192.0.2.0/24"]
clusters = ["us-east", "eu-west"]

[[overrides]]
cidr = "198.51.100.0/24"
cluster = "eu-west"

[[overrides]]
cidr = "2001:db8::/32"
lat = 40.7
lon = -74.0
country = "us"
"""
        )
    )
    assert config.rules == (
        Rule(
            "eu-residency",
            ("eu-west",),
            strict=True,
            countries=frozenset({"DE", "FR"}),
            continents=frozenset({"EU"}),
        ),
        Rule("rule 1", ("us-east", "eu-west"), cidrs=(ipaddress.ip_network("192.0.2.0/24"),)),
    )
    assert config.overrides == (
        Override(ipaddress.ip_network("198.51.100.0/24"), cluster="eu-west"),
        Override(ipaddress.ip_network("2001:db8::/32"), lat=40.7, lon=-74.0, country="US"),
    )
    assert (config.router.tie_km, config.geoip.max_accuracy_km) == (150, 250)


def test_bias_and_weight_default_to_no_effect() -> None:
    config = parse(tomllib.loads(CLUSTERS))
    assert all((c.bias_km, c.weight) == (0, 1) for c in config.clusters)
    assert (config.router.tie_km, config.geoip.max_accuracy_km) == (0, 500)
    assert (config.rules, config.overrides) == ((), ())


RULE = '[[rules]]\ncountries = ["DE"]\nclusters = ["eu-west"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[[rules]]\ncountries = ["DE"]\nclusters = ["eu-west", "x"]',
            "rules[0].clusters[1]: no cluster named 'x'",
            id="rule-names-an-unknown-cluster",
        ),
        pytest.param(
            '[[rules]]\ncountries = ["DE"]\nclusters = ["eu-west", "eu-west"]',
            "rules[0].clusters[1]: repeats 'eu-west'",
            id="rule-repeats-a-cluster",
        ),
        pytest.param(
            '[[rules]]\ncountries = ["DE"]',
            "rules[0].clusters: is required",
            id="rule-without-clusters",
        ),
        pytest.param(
            '[[rules]]\ncountries = ["DE"]\nclusters = []',
            "rules[0].clusters: must be a non-empty array of cluster names",
            id="rule-with-no-clusters",
        ),
        pytest.param(
            '[[rules]]\nclusters = ["eu-west"]',
            "rules[0]: matches no client: give countries, continents or cidrs",
            id="rule-matching-nobody",
        ),
        pytest.param(
            '[[rules]]\ncountries = ["Germany"]\nclusters = ["eu-west"]',
            "rules[0].countries: [0] must be a two-letter ISO country code",
            id="rule-country-not-iso",
        ),
        pytest.param(
            '[[rules]]\ncontinents = ["EUR"]\nclusters = ["eu-west"]',
            "rules[0].continents: [0] must be a continent code (AF, AN, AS, EU, NA, OC, SA)",
            id="rule-continent-unknown",
        ),
        pytest.param(
            '[[rules]]\ncidrs = ["10.0.0.1/8"]\nclusters = ["eu-west"]',
            "rules[0].cidrs: [0] has host bits set",
            id="rule-cidr-host-bits",
        ),
        pytest.param(
            RULE + 'strict = "yes"',
            "rules[0].strict: must be true or false",
            id="rule-strict-not-boolean",
        ),
        pytest.param(
            RULE + "priority = 1", "rules[0].priority: unknown key", id="rule-unknown-key"
        ),
        pytest.param(
            RULE + 'name = "r"\n' + RULE + 'name = "r"',
            "rules[1].name: duplicate rule name 'r' (first at rules[0])",
            id="rule-duplicate-name",
        ),
        pytest.param(
            'rules = "eu"', "rules: must be an array of [[rules]] tables", id="rules-not-tables"
        ),
        pytest.param(
            '[[overrides]]\ncluster = "eu-west"',
            "overrides[0].cidr: is required",
            id="override-without-cidr",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "x"',
            "overrides[0].cluster: no cluster named 'x'",
            id="override-names-an-unknown-cluster",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"',
            "overrides[0]: needs either cluster or lat and lon",
            id="override-without-a-place",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "eu-west"\nlat = 1\nlon = 2',
            "overrides[0]: give either cluster or lat and lon, not both",
            id="override-with-two-places",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\nlat = 1',
            "overrides[0].lon: is required beside the other",
            id="override-lat-without-lon",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\nlat = 91\nlon = 2',
            "overrides[0].lat: must be within -90..90",
            id="override-lat-out-of-range",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "not-a-net"\ncluster = "eu-west"',
            "overrides[0].cidr: is not an IP address or CIDR: 'not-a-net'",
            id="override-cidr-garbage",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "eu-west"\n'
            '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "us-east"',
            "overrides[1].cidr: '192.0.2.0/24' is overridden already at overrides[0]",
            id="override-twice",
        ),
        pytest.param(
            '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "eu-west"\ncountry = "XYZ"',
            "overrides[0].country: must be a two-letter ISO country code",
            id="override-country-not-iso",
        ),
        pytest.param(
            "[router]\ntie_km = -1", "router.tie_km: must be within 0..20000", id="tie-negative"
        ),
        pytest.param(
            "[geoip]\nmax_accuracy_km = 0",
            "geoip.max_accuracy_km: must be within 1..100000",
            id="max-accuracy-zero",
        ),
    ],
)
def test_invalid_traffic_policy_names_the_key_path(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("bias_km", "30000", "clusters[0].bias_km: must be within -20000..20000",
                     id="bias-too-large"),
        pytest.param("bias_km", '"far"', "clusters[0].bias_km: must be a number, not a string",
                     id="bias-not-a-number"),
        pytest.param("weight", "-1", "clusters[0].weight: must be within 0..1000000",
                     id="weight-negative"),
        pytest.param("weight", "true", "clusters[0].weight: must be a number, not a boolean",
                     id="weight-boolean"),
    ],
)  # fmt: skip
def test_invalid_cluster_bias_or_weight_names_the_key_path(
    key: str, value: str, expected: str
) -> None:
    text = CLUSTERS.replace("lon = -6.26\n", f"lon = -6.26\n{key} = {value}\n", 1)
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    assert expected in [str(p) for p in info.value.problems]


def test_a_reload_diff_names_changed_rules_overrides_and_bias() -> None:
    old = parse(tomllib.loads(CLUSTERS))
    new = parse(
        tomllib.loads(
            CLUSTERS.replace("lon = -6.26\n", "lon = -6.26\nbias_km = 100\n", 1)
            + RULE
            + '[[overrides]]\ncidr = "192.0.2.0/24"\ncluster = "eu-west"\n'
            + "[geoip]\nmax_accuracy_km = 300\n"
        )
    )
    change = compare(old, new)
    assert {"clusters.eu-west.bias_km", "rules", "overrides", "geoip.max_accuracy_km"} <= set(
        change.changed
    )
    # All of it is read per request: a reload takes it.
    assert change.needs_restart == ()


def test_the_failure_policy_keys_are_read_into_frozen_values() -> None:
    config = parse(
        tomllib.loads(
            """
[router]
on_pinned_down = "temporary"
all_down = "ignore_health"
panic_below = 0.3
spill_low = 0.6
spill_high = 0.9
failover_spread_km = 1500

[health]
stabilize_s = 30
ramp_s = 120
"""
            + CLUSTERS
        )
    )
    r, h = config.router, config.health
    assert (r.on_pinned_down.value, r.all_down.value, r.panic_below) == (
        "temporary",
        "ignore_health",
        0.3,
    )
    assert (r.spill_low, r.spill_high, r.failover_spread_km) == (0.6, 0.9, 1500)
    assert (h.stabilize_s, h.ramp_s) == (30, 120)
    defaults = parse(tomllib.loads(CLUSTERS))
    assert (defaults.router.on_pinned_down.value, defaults.router.all_down.value) == (
        "repin",
        "503",
    )
    assert (defaults.health.stabilize_s, defaults.health.ramp_s) == (0, 0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            '[router]\non_pinned_down = "moveit"',
            "router.on_pinned_down: must be one of 'repin', 'temporary', 'strict'",
            id="on_pinned_down_names_its_choices",
        ),
        pytest.param(
            "[router]\nall_down = 502",
            "router.all_down: must be one of '503', 'fallback', 'ignore_health'",
            id="all_down_names_its_choices",
        ),
        pytest.param(
            "[router]\npanic_below = 1.5", "router.panic_below", id="panic_below_is_a_share"
        ),
        pytest.param(
            "[router]\nspill_low = 0.9\nspill_high = 0.8",
            "router.spill_high: must be above spill_low (0.9)",
            id="spill_high_must_be_above_spill_low",
        ),
        pytest.param("[router]\nspill_high = 2", "router.spill_high", id="spill_high_is_a_share"),
        pytest.param(
            "[router]\nfailover_spread_km = -1",
            "router.failover_spread_km",
            id="failover_spread_km_is_not_negative",
        ),
        pytest.param("[health]\nstabilize_s = -1", "health.stabilize_s", id="stabilize_s_negative"),
        pytest.param('[health]\nramp_s = "long"', "health.ramp_s", id="ramp_s_is_a_number"),
    ],
)
def test_a_bad_failure_policy_key_is_named(text: str, problem: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(problem) for p in found), found

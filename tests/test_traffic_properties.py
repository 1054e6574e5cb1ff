"""Properties of the traffic policy over generated configurations, clients and health."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from georouter.config import Config, parse
from georouter.core.location import Location, LocationSource
from georouter.core.policy import Ranking, haversine_km, spread_of
from georouter.runtime import Runtime
from tests.harness import SITES

NAMES = tuple(SITES)
COUNTRIES = ("DE", "FR", "US", "JP", "BR")
CONTINENTS = {"DE": "EU", "FR": "EU", "US": "NA", "JP": "AS", "BR": "SA"}

names = st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True)
rule = st.fixed_dictionaries(
    {
        "countries": st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3, unique=True),
        "clusters": names,
        "strict": st.booleans(),
    }
)


@st.composite
def configs(draw: st.DrawFn, *, plain: bool = False) -> Config:
    chosen = draw(names)
    clusters = []
    for name in chosen:
        entry: dict[str, Any] = {
            "name": name,
            "url": f"https://{name}.example.net",
            "lat": SITES[name][0],
            "lon": SITES[name][1],
        }
        if not plain:
            entry["bias_km"] = draw(st.integers(-3000, 3000))
            entry["weight"] = draw(st.integers(0, 5))
        clusters.append(entry)
    rules = []
    if not plain:
        for r in draw(st.lists(rule, max_size=3)):
            kept = [n for n in r["clusters"] if n in chosen] or [chosen[0]]
            rules.append(r | {"clusters": kept})
    tie_km = 0 if plain else draw(st.integers(0, 3000))
    return parse(
        {
            "clusters": clusters,
            "router": {"fallback": chosen[0], "tie_km": tie_km},
            "rules": rules,
        }
    )


@st.composite
def locations(draw: st.DrawFn) -> Location:
    country = draw(st.sampled_from(COUNTRIES))
    return Location(
        lat=draw(st.floats(-90, 90)),
        lon=draw(st.floats(-180, 180)),
        country=country,
        accuracy_km=draw(st.sampled_from([1, 50, 200, 1000])),
        source=LocationSource.GEOIP,
        continent=CONTINENTS[country],
    )


def chosen_name(ranking: Ranking) -> str | None:
    return None if ranking.chosen_at is None else ranking.order[ranking.chosen_at][0].name


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    cfg=configs(),
    location=locations(),
    down=st.sets(st.sampled_from(NAMES)),
    spread=st.integers(0, 2**64 - 1),
)
def test_the_chosen_cluster_is_routable_and_allowed_by_the_clients_strict_rule(
    cfg: Config, location: Location, down: set[str], spread: int
) -> None:
    ranking = Runtime.of(cfg).rank(location, dict.fromkeys(down, "down"), spread=spread)
    name = chosen_name(ranking)
    configured = {c.name for c in cfg.clusters}
    first_rule = next((r for r in cfg.rules if location.country in r.countries), None)
    allowed = set(first_rule.clusters) if first_rule and first_rule.strict else configured
    if name is None:
        # No cluster only when none the client may use is up.
        assert not (allowed - down)
    else:
        assert name not in down
        assert name in allowed
    if first_rule is not None and not first_rule.strict and set(first_rule.clusters) - down:
        # A non-strict rule's clusters win while any of them is routable.
        assert name in first_rule.clusters


@SETTINGS
@given(
    cfg=configs(plain=True),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    down=st.sets(st.sampled_from(NAMES)),
    spread=st.integers(0, 2**64 - 1),
)
def test_with_no_rules_bias_or_weights_the_choice_is_the_nearest_routable(
    cfg: Config, lat: float, lon: float, down: set[str], spread: int
) -> None:
    location = Location(lat, lon, "DE", 10, LocationSource.GEOIP, "EU")
    ranking = Runtime.of(cfg).rank(location, dict.fromkeys(down, "down"), spread=spread)
    up = [c for c in cfg.clusters if c.name not in down]
    nearest = min(up, key=lambda c: (haversine_km(lat, lon, c.lat, c.lon), c.name), default=None)
    assert chosen_name(ranking) == (nearest.name if nearest else None)


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 6), min_size=2, max_size=4))
def test_weights_converge_to_their_shares_over_many_sessions(weights: list[int]) -> None:
    # Clusters at one point, so all of them are within any tie_km of each other.
    cfg = parse(
        {
            "clusters": [
                {"name": f"c{i}", "url": f"https://c{i}.example.net", "lat": 50, "lon": 8}
                | {"weight": w}
                for i, w in enumerate(weights)
            ],
            "router": {"tie_km": 1},
        }
    )
    rt = Runtime.of(cfg)
    location = Location(48.0, 11.0, "DE", 10, LocationSource.GEOIP, "EU")
    sessions = 4000
    counts = dict.fromkeys((f"c{i}" for i in range(len(weights))), 0)
    for n in range(sessions):
        name = chosen_name(rt.rank(location, {}, spread=spread_of(f"session-{n}")))
        assert name is not None
        counts[name] += 1
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[f"c{i}"] / sessions - w / total) < 0.035, counts


@SETTINGS
@given(
    cfg=configs(),
    location=locations(),
    down=st.sets(st.sampled_from(NAMES)),
    session=st.text(min_size=1, max_size=20),
)
def test_every_edge_given_the_same_inputs_chooses_the_same_cluster(
    cfg: Config, location: Location, down: set[str], session: str
) -> None:
    unroutable = dict.fromkeys(down, "down")
    # Two edges: two snapshots of one file, each asked twice (the second from its cache).
    edges = [Runtime.of(cfg), Runtime.of(cfg)]
    answers = {
        (chosen_name(r), r.reason)
        for rt in edges
        for r in (rt.rank(location, unroutable, spread=spread_of(session)) for _ in range(2))
    }
    assert len(answers) == 1


def test_the_session_hash_is_the_same_in_every_process() -> None:
    # Python's hash() is salted per process; the spread must not be.
    assert spread_of("session-1") == 0xAE49BD2CD463E7AC

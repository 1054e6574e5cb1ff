"""georouter: a geo-aware, multi-cluster HTTP request router.

For every request an edge works out where the client is and names the nearest
healthy cluster. The map of the package, top to bottom; a module imports only
from layers below it (``import-linter`` enforces this, see pyproject.toml)::

    cli            the `georouter` command: check, serve, route, demo
    demo           stand-in clusters + an edge, on one machine
    server         Hypercorn on a socket we bind ourselves
    app            Starlette HTTP API; its lifespan owns every service
    router         client address -> Decision (locate, rank, choose)
    geo | monitor | standin
                   I/O adapters: GeoIP database, active health probes,
                   a stand-in cluster (a real HTTP server on loopback)
    policy | health | clientip | metrics | openapi
                   pure: ranking, health transitions, client-IP rules
    location       the Location value
    config         clusters.toml -> frozen, validated dataclasses
    errors         the exception tree

The pure modules (policy, health, clientip, location, config) import no I/O
library: they take plain values and return plain values, so most tests are
tables of cases.
"""

__version__ = "0.1.0"

"""georouter: a geo-aware, multi-cluster HTTP request router.

For every request an edge works out where the client is, names the nearest
healthy cluster, and keeps a session on the cluster that served it first
through a session map in Redis shared by every edge. The map of the package,
top to bottom; a module imports only from layers below it (``import-linter``
enforces it, see pyproject.toml)::

    cli                 the `georouter` command: check, serve, route, demo
    demo | supervisor   stand-ins + an edge on one machine | N workers + 1 prober
    server              Hypercorn or Uvicorn on a socket we bind ourselves
    app                 the ASGI app; its lifespan owns every service;
                        GET /v1/route bypasses Starlette (FastRoute)
    api | admin         the routing API and operator endpoints | session admin
    web                 what handlers share: services, JSON errors, parsing
    router              client (+ session) -> Decision: locate, rank, pin
    sessionmap | geo | monitor | standin | board
                        I/O adapters: the session map as the router sees it
                        (breaker, local memory, near cache, write-back), the
                        GeoIP database, active health probes, a stand-in
                        cluster, the health board shared by worker processes
    sessions | embedded Redis session store (GETEX, Lua pin script) | the
                        private redis-server of the embedded default
    pipelining | redisclient
                        Redis commands asked for together as one pipeline |
                        Redis clients (standalone, Sentinel, Cluster) from a URL
    policy | health | clientip | metrics | openapi | pins | breaker | sessionid
                        pure: ranking, health transitions, client-IP rules,
                        counters, the API description, pins and caches of
                        them, the circuit breaker, session ids and cookies
    location            the Location value
    config | redisurl   clusters.toml -> frozen, validated dataclasses
    errors              the exception tree

The pure modules import no I/O library: they take plain values and return
plain values, so most tests are tables of cases.
"""

__version__ = "0.1.0"

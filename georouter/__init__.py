"""georouter: a geo-aware, multi-cluster HTTP request router.

For every request an edge works out where the client is, names the nearest
healthy cluster, and keeps a session on the cluster that served it first
through a session map in Redis shared by every edge. The map of the package,
top to bottom; a module imports only from layers below it (``import-linter``
enforces it, see pyproject.toml)::

    cli/            the `georouter` command: check, serve, route, demo; explain:
                    `route --explain`, every cluster weighed, one line each;
                    standin: `georouter standin NAME`, a stand-in cluster as a
                    process (Compose); diff: `check --diff`, what a reload would move
                    (http.dryrun, sessions.census); geodata: `geodata update|info`
    demo/           run: stand-in clusters + an edge on one machine; standin: a cluster
    serve/          server: Hypercorn or Uvicorn on a socket we bind (header deadlines,
                    drain); supervisor: one edge process (serve_edge), or N workers +
                    1 prober process
    http/           app: the ASGI app, its lifespan owns every service, GET /v1/route
                    bypasses Starlette; routing: the routing API; status: clusters,
                    healthz, readyz, metrics, OpenAPI; exposition: /metrics through
                    prometheus_client; responses: responses counted by status;
                    admin: session and config admin,
                    lockout; clusteradmin: drain, undrain, override; limits:
                    [limits] for every request; accesslog: a line per
                    request; reload: clusters.toml re-read and swapped whole; common:
                    what handlers share; dispatch: which handler a request goes
                    to (API prefix, data path, fast route); tenantadmin: tenant homes;
                    openapi (+ openapi_parts, openapi_clusters, openapi_tenants):
                    the API description
    router          locate -> rank -> resolve the session: plain orchestration
    runtime         the runtime snapshot: config + everything derived from it, one
                    value per request, swapped whole (``Router.swap``)
    sessions/ | geoip/ | probes/
                    I/O behind small classes:
                    sessions: map (the one question the router asks: near cache,
                    Redis, outage memory, write-back, breaker), store (the store
                    protocol), redisstore + scripts (Redis and its Lua pin rule),
                    knowledge (what an edge knows: near cache, outage memory,
                    write-back queue), pipelining, deadline (a Redis deadline
                    blind to our own lag),
                    clients, embedded (the private redis-server), nearcache,
                    outage, ids (session ids, signed cookies), controls (drains and
                    overrides shared through Redis), tenants (run-time tenant
                    homes through Redis), shared (announce and follow, for both),
                    sharedhealth (every edge's probe results through Redis);
                    geoip: database (MaxMind DB lookups, cached per network);
                    probes: active (health probes), board (health shared by workers),
                    passive (ejections from the data path), routable (probes,
                    ejections, drains and overrides as the router's one view);
                    metricsboard: counters and histograms shared by workers
                    and the prober
    core/           pure: clientip, location, health (transitions, failure window),
                    pin (the pin value and the pin rule), breaker, policy (ranking:
                    bias, residency rules applied, weighted ties), rules (which
                    residency rule a client falls under), overrides (networks placed
                    by the operator, longest prefix first), decision, ratelimit
                    (per-address budgets), ejection (passive health transitions),
                    controls (drains, forced states, and what they and health make
                    routable), quorum (the health verdict the edges agree on),
                    admission (load spill and failback ramp shares of new sessions),
                    split (weighted draws every edge makes alike), candidate (one
                    cluster as explained), tenants (a tenant's home)
    config/         model (frozen dataclasses), files (reading clusters.toml), parse
                    (every problem with its key path), sections (the tables after
                    [router]), traffic ([[rules]] and [[overrides]]), values (the
                    checks of one value), diff (what a new file changes), redisurl,
                    sharedhealth (the [health] keys of shared health)
    metrics         counters and fixed-bucket histograms as plain values (the hot
                    path's; merged across processes)
    errors          the one exception tree

The core imports no I/O library, no clock, no randomness: it takes plain values
and returns plain values, so most tests are tables of cases. Where a feature
lands: the data path in a ``proxy`` package beside ``http``; passive health in
``probes``; traffic policy (residency, bias, spill, failback) as modules of
``core``.
"""

__version__ = "0.1.0"

"""The REST API: an interface over the application layer, served by ``stasis serve``.

Like the CLI, it holds no rule of its own: a route parses its request, checks the
permission it declares, calls one application function and answers with that
function's result model (the same model ``--json`` prints).

- :mod:`stasis.api.app`: the FastAPI application, built for one :class:`ApiContext`;
- :mod:`stasis.api.context`: what the routes work on (catalog, repositories, libvirt);
- :mod:`stasis.api.guard`: authentication, and the permission every route declares;
- :mod:`stasis.api.problems`: errors as RFC 9457 ``application/problem+json``;
- :mod:`stasis.api.routes`: the routes, one module per resource.
"""

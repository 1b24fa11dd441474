"""An HTTP/1.1 front end for a topology: requests in as events, responses back out.

Three pieces, used together in a topology (see ``topologies/http-service.yaml``):

``HttpFrontend`` (source)
    Serves HTTP/1.1 with keep-alive on `host`:`port` (loopback by default) from a thread
    of the source process. Each request becomes an event ``{"id", "route", "method",
    "path", "query", "headers", "body", "client", "class", "deadline"}`` routed by method
    and path (`routes`) to its route's first stage (use ``when: {route: NAME}`` edges).
    Every request gets an answer: the response, ``503`` with ``Retry-After`` when
    admission refuses it (``stages.http.admission``: in-flight bound, token bucket, p90
    response-time controller, request classes), ``504`` when its deadline passes,
    ``500`` when its handler failed, ``404`` for an unknown path, ``405`` for a wrong
    method, ``413`` for a body over `max_body_bytes`, ``400`` / ``431`` for malformed
    requests or headers, ``408`` for a client too slow to send its request.
``Call`` (handler)
    Calls ``func(request)`` (named in params, from the topology file) and turns what it
    returns into a response event: a dict with ``status``/``headers``/``body``, a str
    (text), bytes, or anything else as JSON. An exception becomes a 500 that names no
    internals (the traceback goes to the worker's log). The response event also says
    how long ``func`` took and in which process (``service``: [seconds, pid], a field
    `Call` sets): the front end's admission learns the route's pool from it.
``Respond`` (sink)
    Hands the responses of each batch, in one message, to the front end listening on
    the same `port`, through a socket in a private per-user directory.

The package's modules: ``frontend`` holds the three stages, ``admission`` the front end's
admission control (pure, on injected clocks).
"""

from stages.http.frontend import Call, HttpFrontend, Respond, reply_endpoint, response

__all__ = ["Call", "HttpFrontend", "Respond", "reply_endpoint", "response"]

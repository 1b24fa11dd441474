"""The HTTP front end and its admission control, named in YAML as ``stages.http:HttpFrontend``
(source), ``stages.http:Call`` (handler) and ``stages.http:Respond`` (sink).

frontend
    the three stages: requests in as events, responses back out (see its docstring).
admission
    the front end's admission control: in-flight bound, token bucket, the p90
    response-time controller and request classes (pure, on injected clocks).
"""

from stages.http.frontend import Call, HttpFrontend, Respond, reply_endpoint, response

__all__ = ["Call", "HttpFrontend", "Respond", "reply_endpoint", "response"]

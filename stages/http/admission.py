"""Admission control for a service's entry: who gets in when there is too much. Pure.

Three mechanisms, as in SEDA (Welsh and Culler, "Adaptive Overload Control for Busy
Internet Servers", USITS 2003), applied per route (each route feeds its own first stage):

- a bound on requests in flight (the queue threshold: what the stage may hold);
- a token bucket: a rate and a burst;
- a response-time controller that holds the route's 90th-percentile response time near
  a target by setting the bucket's rate: it measures over 100 requests or 1 s, whichever
  comes first, smooths the p90 (0.7 of the old value, 0.3 of the new), divides the rate
  by 1.2 when the smoothed p90 is over the target, and adds to it when the p90 is more
  than 50% under.

  Three changes to the paper's controller, each for a failure seen in bench_http. (1) A
  decrease divides the rate actually admitted in the window, not a limit far above it
  that binds nothing: with an overload held back by the in-flight bound, the controller
  cut a non-binding rate ten times in a few seconds and landed at half the capacity.
  The admitted rate is counted from the first admission of the window, or after an
  idle spell: counted across the spell, a route idle while another was busy read ~2/s
  at the start of an overload, and was cut to ~15/s.
  (2) Response times of requests admitted before the last change are left out, and the
  smoothing starts afresh: they show the old rate, not the new one, and kept cutting
  after the latency had already fallen. (3) The increase accelerates: each consecutive
  window still well under the target adds twice the previous step (2, 4, 8, ...
  requests/s), back to 2 after any other window; the paper's fixed 2 requests/s a
  window took a minute to win back a cut made during a burst.

Request classes: each request has a class, 0 the highest. A class-k request is admitted
only while the bucket holds more than ``k * reserve`` tokens and fewer than
``max_inflight - k * reserve_inflight`` requests are in flight, so under pressure the
lower classes are refused first and the highest last.

Fair shares: a request names its client (the front end uses the connection). Under
pressure (in flight past FAIR_PRESSURE of the bound, or the bucket below
1 - FAIR_PRESSURE of its burst), a client that has been admitted more than the mean of
the active clients lately (counts halve every FAIR_HALF_LIFE_S) is refused first, so
refusals rotate among clients instead of falling on whoever is unlucky.

Work-conserving: the rate the response-time controller sets is a means to hold the
p90, not a limit of its own. A request is admitted without a token, and the fair-share
check does not count the bucket as tight, when it would wait for nothing or would still
be answered well within the target:

- with nothing in flight;
- while fewer requests are in flight than the route's pool has workers: one of them is
  free. The pool is counted from the replies: `Call` says how long its function took
  and in which process (``service``), and the workers heard from in the last
  POOL_MEMORY_S are the pool;
- while the request, behind those in flight (``(in flight + 1 - pool) x service /
  pool``, first come first served), would be answered within ``(1 - under) x target``;
- for handlers that say nothing of their service, while those in flight would drain
  within ``(1 - under) x target`` at the rate they lately completed (Little's law).

Without it, a route whose pool was smaller than its in-flight bound needed (one worker
serving /work, 48 in flight, 250 ms target) saw the controller cut the rate, the
refused clients paced, and the pool idle with no request in flight while 512
connections waited (wrk, 2026-12-07). Predicted from the drain rate alone, a route
whose handler takes more than half its target never qualified: four workers of 200 ms
under a 250 ms target stayed half idle once the rate was cut, the p90 between half the
target and the target, where the controller neither cuts nor raises. And a wait allowed
up to half the target whatever the service took let latency reach the service time plus
half the target. A free worker adds no wait to anyone; a queue is allowed only as far as
it keeps answers well within the target. A service time is believed only up to the
request's own response time. A rate the user set (``rate``) is a limit, and binds
always.

Every decision returns the reason for a refusal; the caller answers 503 with it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second (inf: no limit)
    burst: float
    tokens: float = -1.0
    t: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def refill(self, now: float) -> None:
        if self.t and math.isfinite(self.rate):
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        elif not math.isfinite(self.rate):
            self.tokens = self.burst
        self.t = now

    def take(self, now: float, keep: float = 0.0) -> bool:
        """Take a token if at least `keep` tokens would be left (a reserve for higher classes)."""
        self.refill(now)
        if self.tokens - 1.0 >= keep - 1e-9:
            self.tokens -= 1.0
            return True
        return False


# Adjustments a controller remembers (its `history`, for inspection and tests): the
# last few minutes at one window a second. Bounded, because a service runs for months
# and a window can close as often as every 100 requests.
HISTORY_WINDOWS = 600


@dataclass
class ResponseTimeController:
    """SEDA's p90 controller: multiplicative decrease, additive increase of a rate."""

    target_s: float
    rate: float  # the admission rate it sets (requests/s)
    min_rate: float = 1.0
    max_rate: float = 1e6
    window_n: int = 100
    window_s: float = 1.0
    smooth: float = 0.7  # weight of the old value
    decrease: float = 1.2  # divide the rate by this when over target
    increase: float = 2.0  # add this (requests/s) when well under target
    under: float = 0.5  # "well under": p90 below (1 - under) * target
    p90_s: float | None = None
    samples: list[float] = field(default_factory=list)
    started: float | None = None
    changed_at: float = -math.inf  # when the rate last changed
    step: float = 0.0  # the next increase (starts at `increase`, doubles while well under)
    admissions: int = 0  # admitted since admissions_t0 (see `admitted`)
    admissions_t0: float | None = None
    last_admitted: float = -math.inf
    # (t, p90, rate) of the last HISTORY_WINDOWS windows
    history: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_WINDOWS))

    def __post_init__(self) -> None:
        self.step = self.step or self.increase

    def admitted(self, now: float) -> None:
        """Count an admission: a decrease then starts from the rate actually admitted.
        After an idle spell (no admission for two windows) the count starts afresh, as
        the samples do: admissions from before it, over the spell, are not a rate."""
        if self.admissions_t0 is None or now - self.last_admitted > 2 * self.window_s:
            self.admissions_t0 = now
            self.admissions = 0
        self.admissions += 1
        self.last_admitted = now

    def observe(self, now: float, latency_s: float, admitted_at: float | None = None) -> None:
        """A response time. One of a request admitted before the rate last changed says
        nothing about the new rate, and is left out."""
        if admitted_at is not None and admitted_at < self.changed_at:
            return
        if self.started is not None and now - self.started > 2 * self.window_s:
            # the window's samples are from before an idle spell: they say nothing now
            self.samples = []
            self.started = None
        if self.started is None:
            self.started = now
        self.samples.append(latency_s)
        if len(self.samples) >= self.window_n or now - self.started >= self.window_s:
            self._adjust(now)

    def _adjust(self, now: float) -> None:
        xs = sorted(self.samples)
        p90 = xs[min(len(xs) - 1, int(math.ceil(0.9 * len(xs))) - 1)]
        self.p90_s = p90 if self.p90_s is None else self.smooth * self.p90_s + (1 - self.smooth) * p90
        old = self.rate
        if self.p90_s > self.target_s:
            # Cut the rate that is really admitted: a limit far above it (all the while
            # the in-flight bound, not the rate, held requests back) would otherwise be
            # cut again and again without effect, then overshoot far below capacity.
            base = self.rate
            if self.admissions_t0 is not None and self.admissions and now > self.admissions_t0:
                base = min(base, self.admissions / (now - self.admissions_t0))
            self.rate = max(self.min_rate, base / self.decrease)
        elif self.p90_s < (1 - self.under) * self.target_s:
            self.rate = min(self.max_rate, self.rate + self.step)
            self.step *= 2  # the next window that is still well under adds twice as much
        if not self.p90_s < (1 - self.under) * self.target_s:
            self.step = self.increase
        self.history.append((now, self.p90_s, self.rate))
        if self.rate != old:
            self.changed_at = now
            self.p90_s = None  # the smoothed value describes the old rate: start afresh
        self.samples = []
        self.started = None
        self.admissions = 0
        self.admissions_t0 = None  # from the next admission: an idle spell is not a low rate


# Fair refusals start at 75% of the in-flight bound. The quarter left is for clients
# under their share: at 90%, the bound itself was reached, and its refusals fall on
# whoever arrives, fair or not (bench_http, 256 clients honouring Retry-After: Jain's
# index 0.944 at 90%, 0.990 at 75%; throughput 96% and 99% of the peak).
FAIR_PRESSURE = 0.75
FAIR_HALF_LIFE_S = 2.0
# The completion rate a request's wait is predicted from: completions over this window.
DRAIN_WINDOW_S = 1.0
# The workers that answered within this long are the route's pool (a pool the runtime
# shrank is over-counted this long: a request may then wait one service time).
POOL_MEMORY_S = 5.0


@dataclass
class RouteLimits:
    max_inflight: int = 64
    rate: float = math.inf  # token bucket rate (requests/s); inf = none
    burst: float = 32.0
    target_p90_s: float | None = None  # response-time controller target; None = off
    classes: int = 1  # request classes, 0 the highest
    reserve: float = 0.25  # share of burst and of max_inflight each lower class leaves unused


class Admission:
    """Admission for one route."""

    def __init__(self, limits: RouteLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        start_rate = limits.rate
        if limits.target_p90_s is not None and not math.isfinite(start_rate):
            start_rate = 1000.0  # the controller needs a finite rate to act on
        self.bucket = TokenBucket(start_rate, limits.burst)
        self.controller = (
            ResponseTimeController(limits.target_p90_s, start_rate, max_rate=max(start_rate, 1000.0) * 10)
            if limits.target_p90_s is not None
            else None
        )
        self.inflight = 0
        self.admitted = 0
        self.refused: dict[str, int] = {}
        # (when, service s or None) of the requests completed in the last DRAIN_WINDOW_S,
        # and the sum and count of the service times among them
        self.completions: deque[tuple[float, float | None]] = deque()
        self._served = [0.0, 0]
        self.workers: dict[object, float] = {}  # worker -> when it last answered
        self.shares: dict[str, float] = {}  # client -> recent admissions (decaying)
        self._shares_t = clock()

    def admit(self, klass: int = 0, client: str | None = None) -> str | None:
        """None if the request may enter (the caller must call `done` for it), else why not."""
        lim = self.limits
        now = self.clock()
        k = max(0, min(klass, lim.classes - 1))
        room = lim.max_inflight - int(k * lim.reserve * lim.max_inflight)
        if self.inflight >= room:
            requests = "request" if self.inflight == 1 else "requests"
            return self._refuse("queue", f"{self.inflight} {requests} in flight (limit {room} for class {k})")
        if self.controller is not None:
            self.bucket.rate = self.controller.rate
        light = self._short_wait(now)
        if client is not None and self._over_share(client, now, room, light):
            return self._refuse("fair", "this client had more than its share lately")
        if not self.bucket.take(now, keep=k * lim.reserve * lim.burst) and not light:
            return self._refuse("rate", f"over the admission rate ({self.bucket.rate:.1f}/s for class {k})")
        self.inflight += 1
        self.admitted += 1
        if self.controller is not None:
            self.controller.admitted(now)
        if client is not None:
            self.shares[client] = self.shares.get(client, 0.0) + 1.0
        return None

    def _short_wait(self, now: float) -> bool:
        """Whether a request admitted now would wait for nothing, or still be answered
        within ``(1 - under) x target``: then the controller's rate does not refuse it
        (see the module doc). Never for a rate the user set."""
        c = self.controller
        if c is None or math.isfinite(self.limits.rate):
            return False
        if self.inflight == 0:
            return True
        pool = self._pool(now)
        if self.inflight < pool:
            return True  # a worker is free
        done = self._recent_completions(now)
        within = (1 - c.under) * c.target_s
        total, n = self._served
        if n and pool:
            service = total / n
            return (self.inflight + 1 - pool) * service / pool + service < within
        if len(done) < 2 or now - done[0][0] < DRAIN_WINDOW_S / 4:
            return False
        return self.inflight / (len(done) / (now - done[0][0])) < within

    def _pool(self, now: float) -> int:
        """The workers heard from in the last POOL_MEMORY_S."""
        if any(now - t > POOL_MEMORY_S for t in self.workers.values()):
            self.workers = {w: t for w, t in self.workers.items() if now - t <= POOL_MEMORY_S}
        return len(self.workers)

    def _recent_completions(self, now: float) -> deque[tuple[float, float | None]]:
        done = self.completions
        while done and now - done[0][0] > DRAIN_WINDOW_S:
            took = done.popleft()[1]
            if took is not None:
                self._served[0] -= took
                self._served[1] -= 1
        if not self._served[1]:
            self._served[0] = 0.0  # no drift left behind by the subtractions
        return done

    def _over_share(self, client: str, now: float, room: int, light: bool) -> bool:
        factor = 0.5 ** ((now - self._shares_t) / FAIR_HALF_LIFE_S)
        if factor < 0.95:
            self.shares = {c: v * factor for c, v in self.shares.items() if v * factor >= 0.05}
            self._shares_t = now
        if len(self.shares) < 2:
            return False
        self.bucket.refill(now)
        tight = not light and math.isfinite(self.bucket.rate)
        tight = tight and self.bucket.tokens < (1 - FAIR_PRESSURE) * self.bucket.burst
        if self.inflight < FAIR_PRESSURE * room and not tight:
            return False
        mean = sum(self.shares.values()) / len(self.shares)
        return self.shares.get(client, 0.0) > mean

    def done(
        self, latency_s: float | None, admitted_at: float | None = None, service: tuple[float, object] | None = None
    ) -> None:
        """A request admitted earlier (at `admitted_at` on this clock, if known) was
        answered (latency None: it did not complete); `service`: how long its handler
        took and which worker ran it, if it said."""
        self.inflight -= 1
        if latency_s is not None and self.controller is not None:
            now = self.clock()
            self.controller.observe(now, latency_s, admitted_at)
            if not math.isfinite(self.limits.rate):  # only the controller's rate yields to a short wait
                took = None
                if service is not None:
                    took = min(max(0.0, service[0]), latency_s)  # no longer than it took to answer
                    self.workers[service[1]] = now
                    self._served[0] += took
                    self._served[1] += 1
                self._recent_completions(now).append((now, took))

    def _refuse(self, kind: str, why: str) -> str:
        self.refused[kind] = self.refused.get(kind, 0) + 1
        return why

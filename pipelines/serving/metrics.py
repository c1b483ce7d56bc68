"""The decision API's metrics in Prometheus' text format (one process's; a scraper sums workers)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# seconds: the buckets of the request latency histogram (the API's budget is milliseconds)
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
        self.latency.setdefault(route, Histogram()).observe(seconds)

    def render(self, counters: Any, delivery: Any) -> str:
        out = [
            "# HELP journeylake_api_requests_total Requests by route and status.",
            "# TYPE journeylake_api_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'journeylake_api_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP journeylake_api_request_seconds Request latency, as the server saw it.",
            "# TYPE journeylake_api_request_seconds histogram",
        ]
        for route, h in sorted(self.latency.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f'journeylake_api_request_seconds_bucket{{route="{route}",le="{le}"}} {running}')
            out.append(f'journeylake_api_request_seconds_sum{{route="{route}"}} {h.total:.6f}')
            out.append(f'journeylake_api_request_seconds_count{{route="{route}"}} {h.n}')
        out += [
            "# HELP journeylake_api_decisions_total Decisions answered (fallbacks included).",
            "# TYPE journeylake_api_decisions_total counter",
            f"journeylake_api_decisions_total {counters.decisions}",
            "# HELP journeylake_api_fallbacks_total Fallback answers by reason.",
            "# TYPE journeylake_api_fallbacks_total counter",
        ]
        for reason, n in sorted(counters.fallbacks.items()):
            out.append(f'journeylake_api_fallbacks_total{{reason="{reason}"}} {n}')
        out += [
            "# HELP journeylake_api_store_errors_total Online store errors met by decisions.",
            "# TYPE journeylake_api_store_errors_total counter",
            f"journeylake_api_store_errors_total {counters.store_errors}",
            "# HELP journeylake_api_reservation_conflicts_total Commits another request beat.",
            "# TYPE journeylake_api_reservation_conflicts_total counter",
            f"journeylake_api_reservation_conflicts_total {counters.conflicts}",
            "# HELP journeylake_api_delivered_total Rows delivered to the lakehouse.",
            "# TYPE journeylake_api_delivered_total counter",
            f'journeylake_api_delivered_total{{what="served_actions"}} {delivery.served_rows}',
            f'journeylake_api_delivered_total{{what="decision_log"}} {delivery.log_rows}',
            f'journeylake_api_delivered_total{{what="offer_responses"}} {delivery.responses}',
            "# HELP journeylake_api_delivery_failures_total Delivery attempts that failed (kept spooled).",
            "# TYPE journeylake_api_delivery_failures_total counter",
            f"journeylake_api_delivery_failures_total {delivery.failures}",
            "# HELP journeylake_api_delivery_restarts_total Delivery processes started again after dying.",
            "# TYPE journeylake_api_delivery_restarts_total counter",
            f"journeylake_api_delivery_restarts_total {delivery.restarts}",
        ]
        return "\n".join(out) + "\n"

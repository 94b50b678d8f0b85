"""Prometheus metrics: what Knative and Ray Serve users ask for and rarely get, a call's latency
split into the wait for a replica, the platform's own time and the handler's time; replica counts
and cold starts; jobs by outcome. Served at `GET /metrics` (admin credentials)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# From 50 us (a warm call's platform time) to a minute (a slow model, a cold start).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "sluice_calls",
            "Synchronous calls to handler services, by outcome",
            ["service", "outcome"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "sluice_call_queue_wait_seconds", "Time a call waited for a free replica", ["service"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.handler_time = Histogram(
            "sluice_call_handler_seconds", "Time a replica took to answer (handler and the hop to it)",
            ["service"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.platform_time = Histogram(
            "sluice_call_platform_seconds", "A call's time in Sluice itself: auth, routing, answering",
            ["service"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cold_starts = Histogram(
            "sluice_replica_cold_start_seconds", "Time from starting a replica to its init having returned",
            ["service"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.jobs = Counter(
            "sluice_jobs", "Jobs finished here, by outcome", ["service", "outcome"], registry=r
        )

    def watch_replicas(self, pools: Callable[[], dict[str, dict[str, Any]]]) -> None:
        """Report replica gauges from `pools()` (service -> status) at each scrape."""
        self.registry.register(_ReplicaGauges(pools))


class _ReplicaGauges(Collector):
    def __init__(self, pools: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        replicas = GaugeMetricFamily("sluice_replicas", "Replicas by state", labels=["service", "state"])
        in_flight = GaugeMetricFamily("sluice_calls_in_flight", "Calls being answered", labels=["service"])
        waiting = GaugeMetricFamily("sluice_calls_waiting", "Calls waiting for a replica", labels=["service"])
        for service, status in self._pools().items():
            replicas.add_metric([service, "ready"], status["ready"])
            replicas.add_metric([service, "starting"], status["starting"])
            in_flight.add_metric([service], status["in_flight"])
            waiting.add_metric([service], status["waiting"])
        yield from (replicas, in_flight, waiting)

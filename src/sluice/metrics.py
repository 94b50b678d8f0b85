"""Prometheus metrics: what Knative and Ray Serve users ask for and rarely get, a call's latency
split into the wait for a replica, the platform's own time and the handler's time; replica counts
and cold starts; exposed services' copies, requests in progress and scaling decisions; jobs by
outcome. Served at `GET /metrics` (admin credentials)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
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

    def watch_exposed(self, services: Callable[[], dict[str, dict[str, Any]]]) -> None:
        """Report exposed services' gauges and counters from `services()` (service -> status) at
        each scrape."""
        self.registry.register(_ExposedMetrics(services))


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


class _ExposedMetrics(Collector):
    def __init__(self, services: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        copies = GaugeMetricFamily(
            "sluice_exposed_copies", "Copies of exposed services by state", labels=["service", "state"]
        )
        in_flight = GaugeMetricFamily(
            "sluice_exposed_requests_in_flight", "Proxied requests holding a copy", labels=["service"]
        )
        waiting = GaugeMetricFamily(
            "sluice_exposed_requests_waiting",
            "Proxied requests waiting for a copy to start",
            labels=["service"],
        )
        decisions = CounterMetricFamily(
            "sluice_exposed_scale_decisions",
            "Scaling decisions, by direction",
            labels=["service", "direction"],
        )
        restarts = CounterMetricFamily(
            "sluice_exposed_copy_restarts", "Copies started again after one exited or failed to start",
            labels=["service"],
        )  # fmt: skip
        for service, status in self._services().items():
            copies.add_metric([service, "ready"], status["healthy"])
            copies.add_metric([service, "starting"], status["starting"])
            in_flight.add_metric([service], status["in_flight"])
            waiting.add_metric([service], status["waiting"])
            decisions.add_metric([service, "up"], status["scale_ups"])
            decisions.add_metric([service, "down"], status["scale_downs"])
            restarts.add_metric([service], status["restarts"])
        yield from (copies, in_flight, waiting, decisions, restarts)

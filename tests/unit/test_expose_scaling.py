"""The scaling policy of exposed services, with plain numbers (no server)."""

from __future__ import annotations

import pytest

from sluice.replicas.exposed import ExposeScaling, LoadWindow, wanted_copies
from sluice.spec.service import Expose, ServiceSpec


@pytest.mark.parametrize(
    ("peak", "wanted"), [(0, 1), (1, 1), (4, 1), (5, 2), (12, 3), (13, 3), (1000, 3)]
)  # fmt: skip
def test_copies_wanted_for_the_busiest_moment(peak: int, wanted: int) -> None:
    scaling = ExposeScaling(min_copies=1, max_copies=3, target_in_flight=4, idle_timeout=60)
    assert wanted_copies(scaling, peak) == wanted


def test_min_scale_zero_wants_no_copy_once_idle() -> None:
    scaling = ExposeScaling(min_copies=0, max_copies=2, target_in_flight=1, idle_timeout=60)
    assert (wanted_copies(scaling, 0), wanted_copies(scaling, 1)) == (0, 1)


def test_the_window_keeps_the_peak_for_its_span() -> None:
    window = LoadWindow(span=10)  # slices of 0.5 s
    window.record(100.0, 6)
    window.record(101.0, 2)
    window.record(101.2, 1)  # same slice: its peak stays 2
    assert window.peak(105.0) == 6
    assert window.peak(110.4) == 6  # the 6 was seen less than 10 s (and a slice) ago
    assert window.peak(110.6) == 2
    assert window.peak(111.6) == 0


@pytest.mark.parametrize(
    ("fields", "bounds"),
    [({}, (1, 10)), ({"min_scale": 0}, (0, 10)), ({"min_scale": 5, "max_scale": 2}, (2, 2)),
     ({"max_scale": 0}, (1, 1))],
)  # fmt: skip
def test_oscar_bounds_are_made_consistent(fields: dict[str, int], bounds: tuple[int, int]) -> None:
    scaling = ExposeScaling.of(Expose.model_validate(fields))
    assert (scaling.min_copies, scaling.max_copies) == bounds
    assert (scaling.target_in_flight, scaling.idle_timeout) == (4, 60.0)  # Sluice's defaults


def test_cpu_threshold_is_kept_and_reported_not_acted_on() -> None:
    spec = {"name": "s", "image": "i", "script": "s"}
    with_cpu = ServiceSpec.model_validate({**spec, "expose": {"cpu_threshold": 70}})
    assert with_cpu.inactive_fields() == ["expose.cpu_threshold"]
    assert with_cpu.public_dict()["expose"]["cpu_threshold"] == 70
    assert ServiceSpec.model_validate({**spec, "expose": {}}).inactive_fields() == []

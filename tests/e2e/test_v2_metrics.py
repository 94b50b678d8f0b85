"""KServe's V2 inference protocol and the Prometheus metrics, against a real server and real
replicas (the handler uses numpy, as models do)."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluice.spec.code import pack_code
from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)
CODE = textwrap.dedent(
    """\
    import numpy as np
    from sluice.handler import HTTPError

    def batch(requests):
        return [{"n": r.inputs["x"].size} for r in requests]

    def predict(request):
        if request.inputs is None:
            if request.body == b"refuse":
                raise HTTPError(422, "no")
            return {"plain": request.text()}
        x = request.inputs["x"]
        if "words" in request.inputs:
            return {"upper": np.char.upper(request.inputs["words"].astype(str))}
        if request.params.get("as") == "list":
            return (x * 10).tolist()
        return {"sum": x.sum(axis=1), "double": x * 2, "positive": x > 0}
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("v2") / "data", env={"SLUICE_WORKERS": "2"}).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("code")
    (folder / "model.py").write_text(CODE)
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=30) as client:
        spec = {
            "name": "tensors",
            "image": "python",
            "handler": "model:predict",
            "code": pack_code(Path(folder)),
            "synchronous": {"min_scale": 0, "max_scale": 1, "idle_timeout": 60},
        }
        assert client.post("/system/services", json=spec).status_code == 201
        batched = {
            **spec,
            "name": "tensors-batch",
            "handler": "model:batch",
            "batch": {"max_size": 4, "max_wait_ms": 300},
        }
        assert client.post("/system/services", json=batched).status_code == 201
        assert (
            client.post(
                "/system/services", json={"name": "plain-script", "image": "i", "script": "true"}
            ).status_code
            == 201
        )
        assert client.post("/v1/users", json={"name": "mia", "password": "mia-password"}).status_code == 201
        yield client


def infer(http: httpx.Client, body: object, **params: str) -> httpx.Response:
    return http.post("/v2/models/tensors/infer", json=body, params=params)


def test_server_health_and_metadata(http: httpx.Client) -> None:
    assert httpx.get(f"{http.base_url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{http.base_url}/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2").json()["name"] == "sluice"
    metadata = http.get("/v2/models/tensors").json()
    assert metadata["name"] == "tensors" and metadata["handler"] == "model:predict"


def test_readiness_means_a_loaded_replica_and_the_probe_starts_one(http: httpx.Client) -> None:
    first = http.get("/v2/models/tensors/ready")
    if first.status_code == 400:  # scaled to zero: the probe itself starts a replica
        assert first.json() == {"name": "tensors", "ready": False}
    deadline = time.monotonic() + 30
    while http.get("/v2/models/tensors/ready").status_code != 200:
        assert time.monotonic() < deadline, "no replica became ready"
        time.sleep(0.1)
    assert http.get("/v2/models/tensors/ready").json() == {"name": "tensors", "ready": True}


def test_infer_round_trip_with_shapes_and_datatypes(http: httpx.Client) -> None:
    request = {
        "id": "req-1",
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, -2, 3, 4, 5, 6]}],
    }
    answer = infer(http, request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "tensors" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["sum"] == {"name": "sum", "shape": [2], "datatype": "FP32", "data": [2.0, 15.0]}
    assert outputs["double"]["shape"] == [2, 3] and outputs["double"]["data"] == [
        2.0,
        -4.0,
        6.0,
        8.0,
        10.0,
        12.0,
    ]
    assert outputs["positive"]["datatype"] == "BOOL" and outputs["positive"]["data"] == [
        True,
        False,
        True,
        True,
        True,
        True,
    ]


def test_a_plain_list_becomes_output_0_and_strings_are_bytes(http: httpx.Client) -> None:
    ints = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
    listed = infer(http, ints, **{"as": "list"}).json()["outputs"]
    assert listed == [{"name": "output-0", "shape": [1, 2], "datatype": "INT64", "data": [10, 20]}]
    words = {"inputs": [
        {"name": "x", "shape": [1], "datatype": "INT32", "data": [0]},
        {"name": "words", "shape": [2], "datatype": "BYTES", "data": ["ab", "cd"]},
    ]}  # fmt: skip
    (upper,) = infer(http, words).json()["outputs"]
    assert upper == {"name": "upper", "shape": [2], "datatype": "BYTES", "data": ["AB", "CD"]}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
            "does not fit shape",
        ),
        ({"inputs": []}, "non-empty 'inputs'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}, "datatype 'FP8'"),
        ({"inputs": [{"name": "x", "data": [1]}]}, "lacks shape, datatype"),
    ],
)
def test_bad_tensors_get_a_400_naming_the_problem(http: httpx.Client, body: object, says: str) -> None:
    answer = infer(http, body)
    assert answer.status_code == 400
    assert says in answer.json()["error"]


def test_v2_needs_credentials_and_a_handler_service(http: httpx.Client, server: ServerProcess) -> None:
    anonymous = httpx.post(f"{server.endpoint}/v2/models/tensors/infer", json={"inputs": []})
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    hidden = httpx.post(f"{server.endpoint}/v2/models/tensors/infer", json={}, auth=("mia", "mia-password"))
    assert hidden.status_code == 404
    script = http.post("/v2/models/plain-script/infer", json={"inputs": []})
    assert script.status_code == 400 and "needs a handler service" in script.json()["error"]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in the text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == want:
            return float(match.group(2))
    return 0.0


def test_metrics_count_calls_split_latency_and_show_replicas(
    http: httpx.Client, server: ServerProcess
) -> None:
    before = http.get("/metrics").text
    token = http.get("/system/services/tensors").json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(5):
        assert httpx.post(f"{server.endpoint}/run/tensors", content=b"hi", headers=headers).status_code == 200
    assert httpx.post(f"{server.endpoint}/run/tensors", content=b"refuse", headers=headers).status_code == 422
    after = http.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = sample(text, "sluice_calls_total", service="tensors", outcome="ok")
    assert ok - sample(before, "sluice_calls_total", service="tensors", outcome="ok") == 5
    refused = sample(text, "sluice_calls_total", service="tensors", outcome="handler_error")
    assert refused - sample(before, "sluice_calls_total", service="tensors", outcome="handler_error") == 1
    for histogram in (
        "sluice_call_queue_wait_seconds",
        "sluice_call_handler_seconds",
        "sluice_call_platform_seconds",
    ):
        assert sample(text, f"{histogram}_count", service="tensors") >= 5, histogram
    assert sample(text, "sluice_replicas", service="tensors", state="ready") == 1
    assert sample(text, "sluice_replica_cold_start_seconds_count", service="tensors") >= 1


def test_metrics_are_for_the_admin(http: httpx.Client, server: ServerProcess) -> None:
    assert httpx.get(f"{server.endpoint}/metrics").status_code == 401
    assert httpx.get(f"{server.endpoint}/metrics", auth=("mia", "mia-password")).status_code == 403


def test_a_malformed_request_in_a_batch_fails_alone(http: httpx.Client, server: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    good = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}
    bad = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2, 3]}]}
    url = f"{server.endpoint}/v2/models/tensors-batch/infer"
    with ThreadPoolExecutor(3) as pool:
        answers = list(
            pool.map(lambda body: httpx.post(url, json=body, auth=ADMIN, timeout=30), [good, bad, good])
        )
    assert [a.status_code for a in answers] == [200, 400, 200]
    assert answers[0].json()["outputs"][0]["data"] == [3]

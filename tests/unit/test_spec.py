"""FDL files and service definitions: what parses, what is rejected, and what the error says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from sluice.errors import InvalidInput, SpecError
from sluice.spec.fdl import parse_fdl, parse_service
from sluice.spec.service import PASSIVE_FIELDS, ServiceSpec, StorageIO

# OSCAR's published FDL files, in the project's shared reference folder beside the repository.
EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "oscar" / "fdl-examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
SCRIPT = '#!/bin/sh\necho hello > "$TMP_OUTPUT_DIR/out.txt"\n'

# Each published example and the services it defines (name, image, memory, cpu).
EXPECTED_EXAMPLES = {
    "cowsay.yaml": ("cowsay", "ghcr.io/grycap/cowsay", "1Gi", "1.0"),
    "imagemagick.yaml": ("grayify", "ghcr.io/grycap/imagemagick", "1Gi", "1.0"),
    "plant-classification-sync.yaml": (
        "plant-classification-sync",
        "deephdc/deep-oc-plants-classification-tf",
        "2Gi",
        "1.0",
    ),
    "plants-classification.yaml": ("plants-classification", "ai4oshub/plants-classification", "2Gi", "1.0"),
    "secret-usage.yaml": ("cowsay-secret", "ghcr.io/grycap/cowsay", "1Gi", "1.0"),
    "yolov8.yaml": ("yolov8", "ai4oshub/ai4os-yolov8-torch:latest", "4Gi", "2.0"),
}


def base(**fields: object) -> dict[str, object]:
    """A minimal valid service (API form: the script's content inline), with `fields` on top."""
    return {"name": "svc", "image": "alpine", "script": "echo hi", **fields}


def fdl(service: str, extra: str = "") -> str:
    """An FDL file with one service whose fields are the indented block `service`."""
    indented = "".join(f"      {line}\n" for line in service.strip("\n").splitlines())
    return f"functions:\n  oscar:\n  - my-cluster:\n{indented}{extra}"


def spec_error(data: object) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_service(data)
    return caught.value


def fdl_error(text: str, base_dir: Path | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_fdl(text, base_dir, source="my.yaml")
    return caught.value


# --- the published OSCAR examples ----------------------------------------------------------------


def test_every_published_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED_EXAMPLES)


def _example_params() -> list[object]:
    # yolov8.yaml has trailing tabs after a value, which oscar-cli (Go yaml) accepts: so must we.
    return [pytest.param(path, id=path.stem) for path in EXAMPLES]


@pytest.mark.parametrize("example", _example_params())
def test_published_example_parses(example: Path, tmp_path: Path) -> None:
    copy = tmp_path / example.name
    shutil.copyfile(example, copy)
    (tmp_path / "script.sh").write_text(SCRIPT)

    services = parse_fdl(copy.read_text(), tmp_path, source=example.name)

    name, image, memory, cpu = EXPECTED_EXAMPLES[example.name]
    assert [(s.name, s.image, s.memory, s.cpu) for s in services] == [(name, image, memory, cpu)]
    service = services[0]
    assert service.script == SCRIPT  # the file's content replaced its path
    expected_cluster = "oscar-replica" if name.startswith("cowsay") else "oscar-cluster"
    assert service.cluster_id == expected_cluster


def test_example_with_secrets_and_capital_variables(tmp_path: Path) -> None:
    shutil.copyfile(EXAMPLES_DIR / "secret-usage.yaml", tmp_path / "secret-usage.yaml")
    (tmp_path / "script.sh").write_text(SCRIPT)

    (service,) = parse_fdl((tmp_path / "secret-usage.yaml").read_text(), tmp_path)

    assert service.environment.variables == {"INPUT_TYPE": "json"}
    assert service.environment.secrets == {"COWSAY_SECRET": "this-is-my-secret"}


def test_example_with_storage_paths(tmp_path: Path) -> None:
    shutil.copyfile(EXAMPLES_DIR / "imagemagick.yaml", tmp_path / "imagemagick.yaml")
    (tmp_path / "script.sh").write_text(SCRIPT)

    (service,) = parse_fdl((tmp_path / "imagemagick.yaml").read_text(), tmp_path)

    assert [(io.provider_type, io.provider_id, io.path) for io in service.input] == [
        ("minio", "default", "grayify/in")
    ]
    assert [io.path for io in service.output] == ["grayify/out"]


# --- environment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["variables", "Variables"])
def test_environment_variables_either_spelling(key: str) -> None:
    spec = parse_service(base(environment={key: {"MODEL": "small", "THREADS": 4, "DEBUG": True}}))
    assert spec.environment.variables == {"MODEL": "small", "THREADS": "4", "DEBUG": "true"}


def test_environment_variables_both_spellings_is_an_error() -> None:
    error = spec_error(base(environment={"Variables": {"A": "1"}, "variables": {"B": "2"}}))
    assert error.problems == ["environment: give either 'Variables' or 'variables', not both"]


def test_environment_capital_variables_in_fdl(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo")
    text = fdl("name: svc\nimage: alpine\nscript: s.sh\nenvironment:\n  Variables:\n    K: v\n")
    (spec,) = parse_fdl(text, tmp_path)
    assert spec.environment.variables == {"K": "v"}


# --- errors name the field -----------------------------------------------------------------------


def test_spec_error_is_invalid_input() -> None:
    assert isinstance(spec_error(base(name="")), InvalidInput)


def test_malformed_yaml_names_the_line() -> None:
    text = "functions:\n  oscar:\n  - c:\n      name: svc\n      image: [alpine\n      script: s.sh\n"
    error = fdl_error(text)
    assert re.search(r"line \d+", error.message)
    assert "invalid YAML" in error.message
    assert error.message.startswith("my.yaml: ")


def test_malformed_yaml_line_number_is_the_bad_line() -> None:
    # a tab used for indentation on line 4
    text = "functions:\n  oscar:\n  - c:\n\tname: svc\n"
    error = fdl_error(text)
    assert "line 4," in error.message


@pytest.mark.parametrize("missing", ["name", "image", "script"])
def test_missing_required_field(missing: str) -> None:
    data = base()
    del data[missing]
    assert spec_error(data).problems == [f"{missing}: required field is missing"]


@pytest.mark.parametrize("missing", ["name", "image", "script"])
def test_missing_required_field_in_fdl(missing: str, tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo")
    fields = {"name": "name: svc", "image": "image: alpine", "script": "script: s.sh"}
    del fields[missing]
    error = fdl_error(fdl("\n".join(fields.values())), tmp_path)
    assert f"{missing}: required field is missing" in error.problems
    assert "functions.oscar[0]" in error.message


def test_typo_in_top_level_field_suggests_the_right_one() -> None:
    data = base()
    data["imgae"] = data.pop("image")
    problems = spec_error(data).problems
    assert "imgae: unknown field; did you mean 'image'?" in problems
    assert "image: required field is missing" in problems


def test_typo_inside_input_names_the_entry_and_suggests_path() -> None:
    problems = spec_error(base(input=[{"storage_provider": "minio", "pth": "svc/in"}])).problems
    assert "input[0].pth: unknown field; did you mean 'path'?" in problems


def test_typo_in_second_output_names_its_index() -> None:
    problems = spec_error(base(output=[{"path": "b/out"}, {"path": "b/o2", "sufix": [".png"]}])).problems
    assert problems == ["output[1].sufix: unknown field; did you mean 'suffix'?"]


def test_typo_in_environment() -> None:
    problems = spec_error(base(environment={"secret": {"A": "1"}})).problems
    assert problems == ["environment.secret: unknown field; did you mean 'secrets'?"]


def test_unknown_field_without_close_match_has_no_suggestion() -> None:
    (problem,) = spec_error(base(zzzzzz=1)).problems
    assert problem == "zzzzzz: unknown field"


def test_typo_in_fdl_top_level() -> None:
    error = fdl_error(fdl("name: svc\nimage: a\nscript: s", extra="storage_provider: {}\n"))
    assert "storage_provider: unknown field; did you mean 'storage_providers'?" in error.problems


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a" * 39, True),
        ("a" * 40, False),
        ("a", True),
        ("my-service-2", True),
        ("9lives", True),
        ("Upper", False),
        ("under_score", False),
        ("-leading", False),
        ("trailing-", False),
        ("dot.ted", False),
        ("", False),
    ],
)
def test_service_names(name: str, ok: bool) -> None:
    if ok:
        assert parse_service(base(name=name)).name == name
    else:
        (problem,) = spec_error(base(name=name)).problems
        assert problem.startswith("name: ")


def test_name_too_long_message() -> None:
    (problem,) = spec_error(base(name="a" * 40)).problems
    assert problem == "name: String should have at most 39 characters"


def test_missing_script_file_names_the_file(tmp_path: Path) -> None:
    error = fdl_error(fdl("name: svc\nimage: alpine\nscript: scripts/nope.sh"), tmp_path)
    assert "nope.sh" in error.message
    assert "functions.oscar[0].my-cluster.script" in error.message
    assert "not found" in error.message


def test_script_path_relative_to_fdl_folder(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_text("echo from file\n")
    (spec,) = parse_fdl(fdl("name: svc\nimage: alpine\nscript: scripts/run.sh"), tmp_path)
    assert spec.script == "echo from file\n"


def test_fdl_without_functions_is_rejected() -> None:
    error = fdl_error("storage_providers: {}\n")
    assert "functions" in error.message


def test_fdl_with_empty_service_list_is_rejected() -> None:
    error = fdl_error("functions:\n  oscar: []\n")
    assert "functions.oscar" in error.message


# --- cpu and memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "text", "cores"),
    [(1, "1", 1.0), (0.5, "0.5", 0.5), ("2", "2", 2.0), ("500m", "500m", 0.5), ("1.0", "1.0", 1.0)],
)
def test_cpu_becomes_a_string(cpu: object, text: str, cores: float) -> None:
    spec = parse_service(base(cpu=cpu))
    assert spec.cpu == text
    assert spec.cpu_cores == cores
    assert spec.public_dict()["cpu"] == text


@pytest.mark.parametrize("cpu", ["lots", "0", -1, "-0.5"])
def test_bad_cpu_rejected(cpu: object) -> None:
    (problem,) = spec_error(base(cpu=cpu)).problems
    assert problem.startswith("cpu: ")


@pytest.mark.parametrize(
    ("memory", "limit"),
    [("256Mi", 256 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("64Mi", 64 * 2**20), (1024, 1024)],
)
def test_memory_quantities(memory: object, limit: int) -> None:
    assert parse_service(base(memory=memory)).memory_limit == limit


@pytest.mark.parametrize("memory", ["lots", "2GB", "1e9", "Mi", "-1Gi"])
def test_bad_memory_rejected(memory: str) -> None:
    (problem,) = spec_error(base(memory=memory)).problems
    assert problem.startswith("memory: ")
    assert memory in problem


def test_defaults() -> None:
    spec = parse_service(base())
    assert (spec.memory, spec.cpu, spec.log_level, spec.visibility) == ("256Mi", "0.2", "INFO", "private")
    assert spec.input == [] and spec.output == []
    assert spec.inactive_fields() == []


# --- OSCAR fields accepted but not acted on ------------------------------------------------------


@pytest.mark.parametrize("port", [0, [0], 31000])
def test_expose_node_port_int_or_list(port: object) -> None:
    spec = parse_service(base(expose={"nodePort": port, "api_port": 8080, "min_scale": 1}))
    expected = port if isinstance(port, list) else [port]
    public = spec.public_dict()["expose"]
    assert public["nodePort"] == expected
    assert public["api_port"] == [8080]
    assert public["min_scale"] == 1
    assert "expose" not in spec.inactive_fields()  # exposed services run


def test_oscar_v3_fields_are_accepted_and_listed_inactive() -> None:
    spec = parse_service(
        base(
            replicas=[{"type": "oscar", "cluster_id": "other", "service_name": "svc", "priority": 0}],
            delegation="static",
            rescheduler_threshold=15,
        )
    )
    assert spec.replicas == [{"type": "oscar", "cluster_id": "other", "service_name": "svc", "priority": 0}]
    assert spec.delegation == "static"
    assert spec.rescheduler_threshold == 15
    assert set(spec.inactive_fields()) == {"replicas", "delegation", "rescheduler_threshold"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vo", "vo.example.eu"),
        ("labels", {"team": "a"}),
        ("mount", {"storage_provider": "minio", "path": "b/m"}),
        ("image_pull_secrets", ["regcred"]),
        ("isolation_level", "USER"),
        ("alpine", True),
        ("file_stage_in", True),
        ("total_memory", "4Gi"),
    ],
)
def test_passive_field_stored_and_reported(field: str, value: object) -> None:
    spec = parse_service(base(**{field: value}))
    assert spec.inactive_fields() == [field]
    assert spec.public_dict()[field] == value


def test_cluster_id_from_fdl_is_kept_but_not_reported_inactive(tmp_path: Path) -> None:
    # Every FDL names a cluster: reporting it as "not acted on" on every service would be noise.
    (tmp_path / "s.sh").write_text("echo")
    (spec,) = parse_fdl(fdl("name: svc\nimage: a\nscript: s.sh"), tmp_path)
    assert spec.cluster_id == "my-cluster"
    assert spec.inactive_fields() == []


@pytest.mark.parametrize(
    ("fields", "inactive"),
    [
        ({"visibility": "public"}, []),  # enforced: not reported
        ({"synchronous": {"min_scale": 1}}, ["synchronous.min_scale"]),
        ({"synchronous": {"max_scale": 2}}, []),  # bounds /run's concurrency
        ({"enable_gpu": True}, []),  # acted on by the container executor; the API reports per executor
        ({}, []),
    ],
)
def test_fields_not_acted_on_are_reported(fields: dict[str, object], inactive: list[str]) -> None:
    spec = parse_service({"name": "svc", "image": "a", "script": "s", **fields})
    assert spec.inactive_fields() == inactive


# --- storage paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "resolved"),
    [
        ("minio", "in", "svc/in"),
        ("minio.default", "in", "svc/in"),
        ("s3.aws", "in", "svc/in"),
        ("minio", "bucket/in", "bucket/in"),
        ("minio", "/bucket/in/", "bucket/in"),
        ("minio", "bucket/a/b", "bucket/a/b"),
        ("webdav.dcache", "in", "in"),
        ("onedata.x", "in", "in"),
    ],
)
def test_short_path_gets_the_service_bucket(provider: str, path: str, resolved: str) -> None:
    spec = parse_service(base(input=[{"storage_provider": provider, "path": path}]))
    assert spec.input[0].path == resolved


@pytest.mark.parametrize(
    ("provider", "kind", "ident"),
    [("minio", "minio", "default"), ("minio.default", "minio", "default"), ("s3.aws", "s3", "aws")],
)
def test_storage_provider_type_and_id(provider: str, kind: str, ident: str) -> None:
    io = StorageIO(storage_provider=provider, path="b/x")
    assert (io.provider_type, io.provider_id) == (kind, ident)


@pytest.mark.parametrize("path", ["b/../x", "b//x", "b/./x", "/", ""])
def test_bad_storage_paths_rejected(path: str) -> None:
    problems = spec_error(base(output=[{"path": path}])).problems
    assert len(problems) == 1 and problems[0].startswith("output[0].path: ")


@pytest.mark.parametrize(
    ("prefix", "suffix", "name", "accepted"),
    [
        ([], [], "anything.bin", True),
        ([], [".json"], "result.json", True),
        ([], [".json"], "result.png", False),
        ([], [".json", ".txt"], "notes.txt", True),
        (["res"], [], "result.png", True),
        (["res"], [], "other.png", False),
        (["res"], [".json"], "result.json", True),
        (["res"], [".json"], "result.png", False),
        (["res"], [".json"], "other.json", False),
        # the filters look at the file name, not the folders it was written in
        (["res"], [], "nested/dir/result.png", True),
        (["nested"], [], "nested/dir/result.png", False),
        ([], [".json"], "a.json/b.png", False),
    ],
)
def test_storage_io_accepts(prefix: list[str], suffix: list[str], name: str, accepted: bool) -> None:
    io = StorageIO(path="b/out", prefix=prefix, suffix=suffix)
    assert io.accepts(name) is accepted


def test_single_string_prefix_and_suffix_become_lists() -> None:
    spec = parse_service(base(output=[{"path": "b/out", "suffix": ".json", "prefix": "r"}]))
    assert (spec.output[0].suffix, spec.output[0].prefix) == ([".json"], ["r"])


# --- what the API shows --------------------------------------------------------------------------


def test_public_dict_masks_secrets() -> None:
    spec = parse_service(
        base(environment={"variables": {"MODE": "fast"}, "secrets": {"API_KEY": "s3cr3t", "PW": "hunter2"}})
    )
    public = spec.public_dict()
    assert public["environment"]["variables"] == {"MODE": "fast"}
    assert public["environment"]["secrets"] == {"API_KEY": "********", "PW": "********"}
    text = repr(public)
    assert "s3cr3t" not in text and "hunter2" not in text
    # the stored spec keeps the real values for the runtime
    assert spec.environment.secrets == {"API_KEY": "s3cr3t", "PW": "hunter2"}


def test_public_dict_leaves_out_unset_passive_fields() -> None:
    public = parse_service(base()).public_dict()
    assert not set(PASSIVE_FIELDS) & set(public)


def test_public_dict_round_trips() -> None:
    spec = parse_service(base(cpu=2, input=[{"path": "in"}], expose={"nodePort": 0}))
    again = parse_service(spec.public_dict())
    assert again.public_dict() == spec.public_dict()
    assert isinstance(again, ServiceSpec)


# --- shared storage providers --------------------------------------------------------------------


SHARED_PROVIDERS = """\
storage_providers:
  minio:
    extra:
      endpoint: https://minio.example.org
      verify: true
      access_key: AK
      secret_key: SK
      region: us-east-1
"""


def test_shared_storage_providers_are_copied_into_each_service(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo")
    text = (
        "functions:\n  oscar:\n"
        "  - c1:\n      name: one\n      image: a\n      script: s.sh\n"
        "      input: [{storage_provider: minio.extra, path: one/in}]\n"
        "  - c2:\n      name: two\n      image: a\n      script: s.sh\n" + SHARED_PROVIDERS
    )
    one, two = parse_fdl(text, tmp_path)
    expected = yaml.safe_load(SHARED_PROVIDERS)["storage_providers"]
    assert one.storage_providers == expected
    assert two.storage_providers == expected
    assert (one.cluster_id, two.cluster_id) == ("c1", "c2")


def test_service_own_storage_providers_win_over_shared(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo")
    own = {"s3": {"mine": {"access_key": "A", "secret_key": "B", "region": "eu-west-1"}}}
    text = fdl(
        "name: one\nimage: a\nscript: s.sh\n"
        "storage_providers: {s3: {mine: {access_key: A, secret_key: B, region: eu-west-1}}}",
        extra=SHARED_PROVIDERS,
    )
    (spec,) = parse_fdl(text, tmp_path)
    assert spec.storage_providers == own


@pytest.mark.parametrize("data", [[], "name: svc", None, 3])
def test_service_must_be_a_mapping(data: object) -> None:
    assert "mapping" in spec_error(data).message


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("always", "always"),
        ("IfNotPresent", "if-not-present"),
        ("Never", "never"),
        ("if-not-present", "if-not-present"),
    ],
)
def test_image_pull_policy_takes_kubernetes_spellings(given: str, stored: str) -> None:
    assert parse_service(base(image_pull_policy=given)).image_pull_policy == stored


def test_an_unknown_pull_policy_names_the_choices() -> None:
    with pytest.raises(SpecError) as caught:
        parse_service(base(image_pull_policy="sometimes"))
    assert "image_pull_policy" in str(caught.value)
    assert "if-not-present" in str(caught.value)


def test_network_is_on_unless_turned_off() -> None:
    assert parse_service(base()).network is True
    assert parse_service(base(network=False)).network is False


@pytest.mark.parametrize("name", ["SLUICE_*\nA", "A=B", "1ST", "has space", "", "dash-ed"])
def test_variable_names_must_be_identifiers(name: str) -> None:
    # Anything else could smuggle a line into a container engine's env-file.
    for kind in ("variables", "secrets"):
        with pytest.raises(SpecError, match="not variable names"):
            parse_service(base(environment={kind: {name: "x"}}))


def test_code_that_unpacks_too_big_is_refused(tmp_path: Path) -> None:
    import base64
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.py", b"\0" * (70 * 1024 * 1024))  # packs to ~70 KB
    code = base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(SpecError, match="unpacks to"):
        parse_service(base(handler="model:handle", code=code))

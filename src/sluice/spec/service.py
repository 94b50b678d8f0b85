"""The service model: OSCAR's `types.Service` fields, validated, plus Sluice's extensions.

Fields OSCAR defines but Sluice does not act on yet are accepted and stored (so FDL files work
unchanged) and reported by `ServiceSpec.inactive_fields()`, so the API can say so instead of
silently ignoring them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice.spec.code import check_code

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
ENTRY_POINT = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
SECRET_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")  # Kubernetes' rule for secret names
HANDLER_SCRIPT = "# A handler service: calls and files go to its handler in warm replicas.\n"
QUANTITY_PATTERN = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
QUANTITY_FACTORS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "m": 0.001,
}
DEFAULT_STORAGE_PROVIDER = "minio.default"
MASK = "********"  # what the API shows for a secret
SECRET_PROVIDER_KEYS = frozenset({"secret_key", "password", "token", "auth_password"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Loose(BaseModel):
    """OSCAR sub-objects we store but do not interpret yet: any keys."""

    model_config = ConfigDict(extra="allow")


def memory_bytes(quantity: str) -> int:
    """Kubernetes memory quantity ("256Mi", "2Gi", "1e9" is not accepted) to bytes."""
    match = QUANTITY_PATTERN.match(quantity)
    if not match:
        raise ValueError(f"'{quantity}' is not a memory quantity like 256Mi or 2Gi")
    number = quantity[: match.start(2)] if match.group(2) else quantity
    return int(float(number) * QUANTITY_FACTORS[match.group(2) or ""])


class StorageIO(_Strict):
    """One input or output path: `<bucket>/<folder>` on a storage provider."""

    storage_provider: str = DEFAULT_STORAGE_PROVIDER
    path: str = Field(min_length=1)
    suffix: list[str] = Field(default_factory=list)
    prefix: list[str] = Field(default_factory=list)
    options: str | None = None

    @field_validator("suffix", "prefix", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _clean_path(cls, value: str) -> str:
        cleaned = value.strip().strip("/")
        if not cleaned:
            raise ValueError("must name a bucket, like 'mybucket/input'")
        if any(part in ("", ".", "..") for part in cleaned.split("/")) or "\x00" in cleaned:
            raise ValueError(f"'{value}' may not contain empty, '.' or '..' segments")
        return cleaned

    @property
    def provider_type(self) -> str:
        return self.storage_provider.split(".", 1)[0]

    @property
    def provider_id(self) -> str:
        parts = self.storage_provider.split(".", 1)
        return parts[1] if len(parts) == 2 else "default"

    def accepts(self, name: str) -> bool:
        """Whether an output file (relative name) passes this path's prefix/suffix filters."""
        base = name.rsplit("/", 1)[-1]
        if self.prefix and not any(base.startswith(p) for p in self.prefix):
            return False
        return not self.suffix or any(base.endswith(s) for s in self.suffix)


class Environment(_Strict):
    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _capital_variables(cls, data: Any) -> Any:
        # oscar-cli and OSCAR's own examples write `Variables`; the API documents `variables`.
        if isinstance(data, dict) and "Variables" in data:
            data = dict(data)
            if "variables" in data:
                raise ValueError("give either 'Variables' or 'variables', not both")
            data["variables"] = data.pop("Variables")
        return data

    @field_validator("variables", "secrets", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}
        return value if value is not None else {}

    @field_validator("variables", "secrets")
    @classmethod
    def _variable_names(cls, value: dict[str, str]) -> dict[str, str]:
        # A name is a shell identifier: anything else could smuggle lines into an engine's env-file
        # or name another variable of the server's own environment.
        bad = [name for name in value if not ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"{bad} are not variable names (letters, digits and '_', not first a digit)")
        if any("\0" in text for text in value.values()):
            raise ValueError("a value contains a NUL character")
        return value


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class Synchronous(_Strict):
    min_scale: int = Field(default=0, ge=0)
    max_scale: int = Field(default=0, ge=0, description="0: as many replicas as the machine has cores")
    # Sluice extensions.
    concurrency: int = Field(default=1, ge=1, le=1024, description="calls one replica takes at once")
    idle_timeout: float = Field(
        default=60.0, gt=0, description="seconds a replica above min_scale may idle before it stops"
    )


class Batch(_Strict):
    """Adaptive batching for handler services (Sluice extension): the handler gets a list."""

    max_size: int = Field(ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=60_000)


class Expose(_Loose):
    """OSCAR's exposed service: the script is an HTTP server, kept running and proxied at
    /system/services/{name}/exposed/. Other OSCAR keys (cpu_threshold, nodePort, ...) are kept.

    OSCAR scales the copies on CPU use (`cpu_threshold`, a Kubernetes HPA); Sluice scales them on
    the requests in progress, which its proxy counts exactly (`target_in_flight`, `idle_timeout`)."""

    min_scale: int = Field(default=1, ge=0, le=100, description="copies kept running; 0: none when idle")
    max_scale: int = Field(default=10, ge=0, le=100)
    api_port: list[int] = Field(default_factory=list)
    health_path: str = "/"
    rewrite_target: bool = False  # true: the app sees paths without the /system/.../exposed prefix
    set_auth: bool = False
    # Sluice extensions.
    target_in_flight: int = Field(
        default=4, ge=1, le=10_000, description="requests in progress per copy above which copies are added"
    )
    idle_timeout: float = Field(
        default=60.0, gt=0, le=86_400, description="seconds of lower load before copies above min_scale stop"
    )

    @model_validator(mode="before")
    @classmethod
    def _ports_as_lists(cls, data: Any) -> Any:
        # OSCAR v4 declares ports as lists; oscar-cli 1.12 sends `nodePort: 0`.
        if isinstance(data, dict):
            data = dict(data)
            for key in ("api_port", "nodePort"):
                if isinstance(data.get(key), int):
                    data[key] = [data[key]]
        return data


# OSCAR fields stored as given and not acted on yet (see `inactive_fields`).
PASSIVE_FIELDS = (
    "alpine",
    "annotations",
    "bucket_list",
    "clusters",
    "deployment",
    "enable_sgx",
    "ephemeral_storage_request",
    "federation",
    "file_stage_in",
    "image_prefetch",
    "image_pull_secrets",
    "interlink_node_name",
    "isolation_level",
    "kserve",
    "labels",
    "mount",
    "namespace",
    "total_cpu",
    "total_memory",
    "vo",
    "volume",
    "volume_status",
    "replicas",
    "delegation",
    "rescheduler_threshold",
)


class ServiceSpec(_Strict):
    """One service. Required: `name`, `image`, `script` (the script's content)."""

    name: str = Field(min_length=1, max_length=39)
    image: str = Field(min_length=1)
    script: str = Field(min_length=1)
    memory: str = "256Mi"
    cpu: str = "0.2"
    log_level: Literal["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    input: list[StorageIO] = Field(default_factory=list)
    output: list[StorageIO] = Field(default_factory=list)
    environment: Environment = Field(default_factory=Environment)
    synchronous: Synchronous = Field(default_factory=Synchronous)
    enable_gpu: bool = False
    visibility: Literal["private", "public", "restricted"] = "private"
    allowed_users: list[str] = Field(default_factory=list)
    storage_providers: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    owner: str | None = None
    token: str | None = None
    # Sluice extensions (not in OSCAR's FDL).
    timeout: float | None = Field(default=None, gt=0, description="seconds before a job is killed")
    max_retries: int = Field(default=0, ge=0, le=100, description="re-runs of a failed job")
    network: bool = Field(default=True, description="false: the container runs with no network")
    handler: str | None = Field(default=None, description="module:function answering calls in warm replicas")
    init: str | None = Field(
        default=None, description="module:function run once per replica (load the model)"
    )
    code: str | None = Field(default=None, description="the handler's code folder, a base64 zip")
    batch: Batch | None = None
    image_pull_policy: Literal["always", "if-not-present", "never"] = Field(
        default="if-not-present", description="when the container executor pulls the image"
    )

    # OSCAR fields accepted and stored, not acted on yet.
    alpine: bool | None = None
    annotations: dict[str, Any] | None = None
    bucket_list: list[str] | None = None
    cluster_id: str | None = None
    clusters: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None
    enable_sgx: bool | None = None
    ephemeral_storage_request: str | None = None
    expose: Expose | None = None
    federation: dict[str, Any] | None = None
    file_stage_in: bool | None = None
    image_prefetch: bool | None = None
    image_pull_secrets: list[str] | None = None
    interlink_node_name: str | None = None
    isolation_level: str | None = None
    kserve: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    mount: dict[str, Any] | None = None
    namespace: str | None = None
    total_cpu: str | None = None
    total_memory: str | None = None
    vo: str | None = None
    volume: dict[str, Any] | None = None
    volume_status: dict[str, Any] | None = None
    replicas: list[Any] | None = None
    delegation: str | None = None
    rescheduler_threshold: int | None = None

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"'{value}' must be lowercase letters, digits and '-', starting and ending with a "
                "letter or digit"
            )
        return value

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            try:
                cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a CPU amount like '0.5', '2' or '500m'") from None
            if cores <= 0:
                raise ValueError("must be more than 0")
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_quantity(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            memory_bytes(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _handler_needs_no_script(cls, data: Any) -> Any:
        # OSCAR requires a script; a handler service runs none, so it gets a placeholder.
        if isinstance(data, dict) and data.get("handler") and not data.get("script"):
            data = {**data, "script": HANDLER_SCRIPT}
        return data

    @field_validator("code")
    @classmethod
    def _code_archive(cls, value: str | None) -> str | None:
        if value is not None:
            check_code(value)
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if not SECRET_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a secret name (lowercase letters, digits, '-' and '.')")
        return value

    @field_validator("handler", "init")
    @classmethod
    def _entry_point(cls, value: str | None) -> str | None:
        if value is not None and not ENTRY_POINT.fullmatch(value):
            raise ValueError(f"'{value}' must name a function as 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _handler_extras_need_a_handler(self) -> ServiceSpec:
        for extra in ("init", "code", "batch"):
            if getattr(self, extra) is not None and self.handler is None:
                raise ValueError(f"'{extra}' only applies to handler services: set 'handler' too")
        return self

    @field_validator("image_pull_policy", mode="before")
    @classmethod
    def _kubernetes_pull_policy(cls, value: Any) -> Any:
        # Kubernetes spells them Always / IfNotPresent / Never: accept those too.
        if isinstance(value, str):
            return {"ifnotpresent": "if-not-present"}.get(value.lower(), value.lower())
        return value

    @field_validator("input", "output", "allowed_users", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("environment", "synchronous", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("storage_providers", mode="before")
    @classmethod
    def _providers(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _resolve_short_paths(self) -> ServiceSpec:
        # OSCAR: a MinIO/S3 path without '/' names a folder in the bucket named after the service.
        for io in (*self.input, *self.output):
            if "/" not in io.path and io.provider_type in ("minio", "s3"):
                io.path = f"{self.name}/{io.path}"
        return self

    @property
    def cpu_cores(self) -> float:
        return float(self.cpu[:-1]) / 1000 if self.cpu.endswith("m") else float(self.cpu)

    @property
    def memory_limit(self) -> int:
        return memory_bytes(self.memory)

    def inactive_fields(self) -> list[str]:
        """OSCAR fields set on this service that Sluice stores but does not act on yet."""
        inactive = [f for f in PASSIVE_FIELDS if getattr(self, f) not in (None, [], {}, False)]
        if self.synchronous.min_scale and not self.handler:
            inactive.append("synchronous.min_scale")  # only warm containers act on it (the API says)
        if self.expose is not None and "cpu_threshold" in (self.expose.model_extra or {}):
            inactive.append("expose.cpu_threshold")  # copies scale on requests in progress instead
        return inactive

    def public_dict(self) -> dict[str, Any]:
        """The definition as the API returns it: secrets masked, unset passive fields left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        secrets = data.get("environment", {}).get("secrets")
        if secrets:
            data["environment"]["secrets"] = dict.fromkeys(secrets, MASK)
        # Storage provider credentials stay readable to whoever may read the service, as in OSCAR:
        # clients (oscar-python's Storage helper) read them from here to reach those stores.
        return data

    def keeping_secrets_of(self, stored: ServiceSpec) -> ServiceSpec:
        """This definition with every masked secret (sent back as read) replaced by the stored one."""
        data = self.model_dump(exclude_unset=True, exclude_none=True)
        secrets = data.get("environment", {}).get("secrets", {})
        for name, value in secrets.items():
            if value == MASK and name in stored.environment.secrets:
                secrets[name] = stored.environment.secrets[name]
        for kind, providers in data.get("storage_providers", {}).items():
            for ident, config in providers.items():
                old = stored.storage_providers.get(kind, {}).get(ident, {})
                for name in SECRET_PROVIDER_KEYS & config.keys():
                    if config[name] == MASK and name in old:
                        config[name] = old[name]
        return ServiceSpec.model_validate(data)

"""Configuration, loaded once into a typed object (environment variables `SLUICE_*` and flags).

No other module reads `os.environ` for its own configuration; the composition root
(`sluice.api.app.create_app`) receives a `Settings`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ADMIN_PASSWORD_FILE = "admin-password"


class OidcIssuer(BaseModel):
    """An OIDC provider whose tokens the API accepts."""

    issuer: str
    jwks_url: str
    audience: str | None = None
    groups_claim: str = "groups"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".sluice")
    database: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    storage: str | None = Field(
        default=None,
        description="'local' (buckets under data_dir) or s3://KEY:SECRET@host:port[?region=..&secure=0]",
    )
    public_url: str | None = Field(default=None, description="URL clients use to reach this server")
    admin_user: str = "oscar"
    admin_password: SecretStr | None = None
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=0,
        description="jobs run at once here; 0: accept and serve only, run no jobs",
    )
    executor: Literal["auto", "process", "container"] = Field(
        default="auto",
        description="how jobs run; auto: in containers when a container engine is set, else as processes",
    )
    container_engine: str | None = Field(default=None, description="podman or docker (name or path)")
    container_engine_args: str = Field(
        default="", description="global options for the engine, e.g. '--runtime /usr/sbin/runc'"
    )
    registry_auth_dir: Path | None = Field(
        default=None, description="named registry logins (<name>.json) that image_pull_secrets select"
    )
    registry_auth_file: Path | None = Field(
        default=None, description="registry credentials for pulls (podman's auth.json format)"
    )
    warm_containers: int = Field(
        default=16,
        ge=0,
        description="script containers kept running between invocations; 0: a new container per job",
    )
    warm_container_idle: float = Field(
        default=300.0, gt=0, description="seconds a warm container may stay unused before it is removed"
    )
    script_locale: str | None = Field(
        default=None,
        description="LANG for scripts on the host (e.g. C.UTF-8) unless their service sets one; unset: C",
    )
    job_timeout: float = Field(default=3600.0, gt=0, description="default per-job timeout, seconds")
    log_limit: int = Field(default=256 * 1024, ge=1024, description="bytes of job log kept")
    max_upload: int = Field(default=1024**3, ge=1, description="largest accepted upload, bytes")
    sync_max_waiting: int = Field(
        default=100, ge=0, description="synchronous calls that may wait per service before a 503"
    )
    replica_start_timeout: float = Field(
        default=300.0, gt=0, description="seconds a replica may take to start and load its model"
    )
    max_body: int = Field(default=16 * 1024**2, ge=1, description="largest /job or JSON body, bytes")
    lease_seconds: float = Field(default=30.0, gt=1, description="a running job's lease; renewed")
    reconcile_interval: float = Field(default=30.0, ge=0, description="0 turns the reconciler off")
    retry_base_delay: float = Field(default=2.0, ge=0)
    retry_max_delay: float = Field(default=300.0, ge=0)
    s3_user_credentials: bool = Field(
        default=True,
        description="give each user S3 keys limited to their buckets, through the store's IAM API",
    )
    webhook_token: SecretStr | None = Field(default=None, description="bearer token storage webhooks send")
    oidc_issuers: list[OidcIssuer] = Field(
        default_factory=list,
        description='issuers whose tokens are accepted, as JSON: [{"issuer", "jwks_url", "audience"}]',
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()  # jobs run in other working directories

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'sluice.db'}"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")

    def ensure_admin_password(self) -> tuple[str, bool]:
        """The admin password: configured, or generated once and kept in the data dir.

        Returns the password and whether it was generated just now (so it is printed once).
        """
        if self.admin_password is not None:
            return self.admin_password.get_secret_value(), False
        path = self.data_dir / ADMIN_PASSWORD_FILE
        if path.exists():
            return path.read_text().strip(), False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        return password, True

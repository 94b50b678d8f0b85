"""Named endpoints saved by `sluice login`, like oscar-cli's cluster list.

The file is YAML at `$SLUICE_CONFIG`, else `$XDG_CONFIG_HOME/sluice/config.yaml` (default
`~/.config/sluice/config.yaml`), readable by its owner only since it holds credentials::

    default: prod
    clusters:
      prod: {endpoint: https://sluice.example.org, user: alice, password: ...}
      egi: {endpoint: https://oscar.example.eu, token: eyJ...}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sluice.errors import InvalidInput


@dataclass(frozen=True)
class Cluster:
    endpoint: str
    user: str | None = None
    password: str | None = None
    token: str | None = None


def config_path() -> Path:
    explicit = os.environ.get("SLUICE_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "sluice" / "config.yaml"


def load() -> tuple[dict[str, Cluster], str | None]:
    """The saved clusters and the default's name."""
    path = config_path()
    if not path.exists():
        return {}, None
    try:
        data = yaml.safe_load(path.read_text()) or {}
        clusters = {name: Cluster(**fields) for name, fields in (data.get("clusters") or {}).items()}
    except (yaml.YAMLError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    return clusters, data.get("default")


def save(name: str, cluster: Cluster, make_default: bool) -> Path:
    clusters, default = load()
    clusters[name] = cluster
    return _write(clusters, name if make_default or default is None else default)


def forget(name: str) -> None:
    clusters, default = load()
    if name not in clusters:
        raise InvalidInput(f"no saved cluster '{name}'; saved: {', '.join(clusters) or 'none'}")
    del clusters[name]
    _write(clusters, default if default != name else next(iter(clusters), None))


def _write(clusters: dict[str, Cluster], default: str | None) -> Path:
    """Replace the file atomically, readable by its owner only: it holds credentials."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "default": default,
        "clusters": {n: {k: v for k, v in asdict(c).items() if v is not None} for n, c in clusters.items()},
    }
    staging = path.with_suffix(".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(body, handle, sort_keys=False)
    os.replace(staging, path)
    return path

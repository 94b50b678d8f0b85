"""Registry credentials for pulling a service's image, OSCAR's `image_pull_secrets` made local.

In OSCAR a service names Kubernetes secrets holding registry logins. Here the admin keeps named
logins as files in one folder (`registry_auth_dir`), each `<name>.json` as `podman login
--authfile <name>.json` (or `docker login`) writes it, and a service names them the same way:

    image_pull_secrets: [ghcr-team]      # -> <registry_auth_dir>/ghcr-team.json

Several names are merged into one file for the pull; with none, the server-wide
`registry_auth_file` (if any) is used.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sluice.errors import ExecutorError


class MissingCredentials(ExecutorError):
    """A service names a secret the server does not hold (the job fails with this message)."""


def auth_file_for(
    secrets: Sequence[str], folder: Path | None, default: Path | None
) -> tuple[Path | None, bool]:
    """The auth file to pull with, and whether it is a temporary merge the caller must delete."""
    if not secrets:
        return default, False
    if folder is None:
        raise MissingCredentials(
            f"image_pull_secrets {list(secrets)} name registry logins, but this server has no "
            "registry_auth_dir (SLUICE_REGISTRY_AUTH_DIR) to find them in"
        )
    paths = []
    for name in secrets:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise MissingCredentials(f"image pull secret '{name}' not found: no {name}.json in {folder}")
        paths.append(path)
    if len(paths) == 1:
        return paths[0], False
    merged: dict[str, dict[str, object]] = {"auths": {}}
    for path in paths:
        try:
            merged["auths"].update(json.loads(path.read_text()).get("auths", {}))
        except (OSError, ValueError, AttributeError) as exc:
            raise MissingCredentials(
                f"image pull secret file {path.name} is not an auth.json: {exc}"
            ) from None
    fd, name = tempfile.mkstemp(prefix="sluice-auth-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(merged, handle)
    return Path(name), True

"""`sluice login` saves named endpoints with their credentials, as oscar-cli does; later commands
use them without any flag or variable, and `--cluster` picks another."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import yaml

from tests.server import PASSWORD, SLUICE, ServerProcess


def sluice(
    *args: str, config: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # Only what a fresh shell has: no SLUICE_* connection variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {"SLUICE_CONFIG": str(config), "SLUICE_DATA_DIR": str(config.parent / "none"), **(extra_env or {})}
    )
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env=env, timeout=60)


def test_login_saves_a_cluster_that_later_commands_use(server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    wrong = sluice("--user", "oscar", "--password", "wrong", "login", server.endpoint, config=config)
    assert wrong.returncode == 2 and "wrong user name or password" in wrong.stderr
    assert not config.exists()  # nothing saved for credentials that do not work

    saved = sluice(
        "--user", "oscar", "--password", PASSWORD, "login", server.endpoint, "--name", "lab", config=config
    )
    assert saved.returncode == 0, saved.stderr
    assert "saved as 'lab'" in saved.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds a password
    stored = yaml.safe_load(config.read_text())
    assert stored["default"] == "lab" and stored["clusters"]["lab"]["endpoint"] == server.endpoint

    # No flags, no variables: the default cluster answers.
    listed = sluice("services", config=config)
    assert listed.returncode == 0, listed.stderr

    # Another cluster, chosen by name; the default stays.
    other = sluice(
        "--user",
        "oscar",
        "--password",
        PASSWORD,
        "login",
        server.endpoint + "/",
        "--name",
        "again",
        config=config,
    )
    assert other.returncode == 0, other.stderr
    assert sluice("--cluster", "again", "services", config=config).returncode == 0
    missing = sluice("--cluster", "nowhere", "services", config=config)
    assert missing.returncode == 2 and "no saved cluster 'nowhere'" in missing.stderr

    assert sluice("logout", "lab", config=config).returncode == 0
    assert "lab" not in yaml.safe_load(config.read_text())["clusters"]

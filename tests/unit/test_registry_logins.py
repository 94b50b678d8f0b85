"""Which registry login a pull uses: a service's image_pull_secrets, merged; else the server's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.executors.registry import MissingCredentials, auth_file_for


def login(folder: Path, name: str, registry: str) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"auths": {registry: {"auth": "dTpw"}}}))
    return path


def test_no_secret_uses_the_servers_file(tmp_path: Path) -> None:
    default = login(tmp_path, "server", "r.invalid")
    assert auth_file_for([], tmp_path, default) == (default, False)
    assert auth_file_for([], None, None) == (None, False)


def test_one_secret_is_its_file(tmp_path: Path) -> None:
    path = login(tmp_path, "team-a", "a.invalid")
    assert auth_file_for(["team-a"], tmp_path, None) == (path, False)


def test_several_secrets_are_merged_into_a_private_temporary_file(tmp_path: Path) -> None:
    login(tmp_path, "team-a", "a.invalid")
    login(tmp_path, "team-b", "b.invalid")
    merged, temporary = auth_file_for(["team-a", "team-b"], tmp_path, None)
    assert temporary and merged is not None
    try:
        assert set(json.loads(merged.read_text())["auths"]) == {"a.invalid", "b.invalid"}
        assert merged.stat().st_mode & 0o077 == 0
    finally:
        merged.unlink()


def test_missing_secrets_and_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(MissingCredentials, match=r"'nobody' not found: no nobody\.json in"):
        auth_file_for(["nobody"], tmp_path, None)
    with pytest.raises(MissingCredentials, match="no registry_auth_dir"):
        auth_file_for(["team-a"], None, None)
    (tmp_path / "broken.json").write_text("not json")
    login(tmp_path, "fine", "f.invalid")
    with pytest.raises(MissingCredentials, match=r"broken\.json is not an auth\.json"):
        auth_file_for(["fine", "broken"], tmp_path, None)

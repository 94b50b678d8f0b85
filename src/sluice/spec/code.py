"""A handler service's code folder, carried inside its definition as a base64 zip.

`sluice apply` packs the folder an FDL names in `code:` (as it inlines the script), so the code
travels through the API and the database with the service; each replica unpacks it once per
content and puts it first on its import path.
"""

from __future__ import annotations

import base64
import binascii
import io
import zipfile
from pathlib import Path, PurePosixPath

MAX_CODE_BYTES = 8 * 1024 * 1024  # packed; models belong in buckets or images, not here
MAX_UNPACKED_BYTES = 64 * 1024 * 1024  # a zip bomb must not fill the disk
MAX_CODE_FILES = 10_000
SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def pack_code(folder: Path) -> str:
    """The folder's files as a base64 zip (caches and VCS folders left out)."""
    if not folder.is_dir():
        raise ValueError(f"code folder '{folder}' not found")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not SKIPPED.intersection(relative.parts):
                archive.write(path, relative.as_posix())
    packed = buffer.getvalue()
    if len(packed) > MAX_CODE_BYTES:
        raise ValueError(
            f"code folder '{folder}' packs to {len(packed)} bytes, over {MAX_CODE_BYTES}: "
            "keep models and data in a bucket"
        )
    return base64.b64encode(packed).decode()


def check_code(code: str) -> None:
    """Raise ValueError unless `code` is a base64 zip whose members stay inside its folder."""
    with _open(code):
        pass


def unpack_code(code: str, dest: Path) -> None:
    """Extract a packed code folder into `dest`."""
    with _open(code) as archive:
        archive.extractall(dest)


def _open(code: str) -> zipfile.ZipFile:
    try:
        packed = base64.b64decode(code, validate=True)
        archive = zipfile.ZipFile(io.BytesIO(packed))
    except (binascii.Error, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"code must be a base64 zip of the code folder: {exc}") from None
    if len(packed) > MAX_CODE_BYTES:
        raise ValueError(f"code packs to {len(packed)} bytes, over {MAX_CODE_BYTES}")
    members = archive.infolist()
    if len(members) > MAX_CODE_FILES:
        raise ValueError(f"code holds {len(members)} files, over {MAX_CODE_FILES}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise ValueError(f"code unpacks to {unpacked} bytes, over {MAX_UNPACKED_BYTES}")
    for member in members:
        if member.filename.startswith("/") or ".." in PurePosixPath(member.filename).parts:
            raise ValueError(f"code archive member '{member.filename}' would leave its folder")
    return archive

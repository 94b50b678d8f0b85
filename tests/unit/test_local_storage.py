"""LocalStorage: buckets as folders on a real filesystem."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.errors import BucketNotFound, Conflict, InvalidInput, InvalidObjectKey, ObjectNotFound
from sluice.storage.base import MAX_KEY_BYTES
from sluice.storage.local import TMP_DIR, LocalStorage

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> LocalStorage:
    storage = LocalStorage(root)
    run(storage.create_bucket("bucket"))
    return storage


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"hello \x00\xff world")
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def put_bytes(store: LocalStorage, tmp_path: Path, bucket: str, key: str, data: bytes) -> None:
    source = write(tmp_path / "piece", data)
    run(store.put(source, bucket, key))


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every path under `top` with its content (None for folders)."""
    return {
        str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None) for p in sorted(top.rglob("*"))
    }


def listed(store: LocalStorage, bucket: str, prefix: str = "") -> list[str]:
    async def collect() -> list[str]:
        return [info.key async for info in store.list(bucket, prefix)]

    return run(collect())


def temp_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / TMP_DIR).iterdir())


# --- objects -------------------------------------------------------------------------------------


def test_put_get_round_trip(store: LocalStorage, src: Path, tmp_path: Path) -> None:
    info = run(store.put(src, "bucket", "input/sub/photo.jpg"))
    assert (info.bucket, info.key, info.size) == ("bucket", "input/sub/photo.jpg", src.stat().st_size)

    dest = tmp_path / "downloaded"
    got = run(store.get("bucket", "input/sub/photo.jpg", dest))

    assert dest.read_bytes() == b"hello \x00\xff world"
    assert got.etag == info.etag
    assert got.size == info.size
    assert src.read_bytes() == b"hello \x00\xff world"  # the source is left alone


def test_empty_object(store: LocalStorage, tmp_path: Path) -> None:
    empty = write(tmp_path / "empty", b"")
    assert run(store.put(empty, "bucket", "empty.txt")).size == 0
    run(store.get("bucket", "empty.txt", tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b""


def test_etag_stable_and_changes_with_content(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "k.txt", b"version one")
    first = run(store.stat("bucket", "k.txt")).etag
    assert run(store.stat("bucket", "k.txt")).etag == first
    assert run(store.stat("bucket", "k.txt")).etag == first
    assert [o.etag for o in run(store.list_page("bucket")).objects] == [first]

    put_bytes(store, tmp_path, "bucket", "k.txt", b"version two!")
    second = run(store.stat("bucket", "k.txt"))
    assert second.etag != first
    assert second.size == len(b"version two!")
    run(store.get("bucket", "k.txt", tmp_path / "now"))
    assert (tmp_path / "now").read_bytes() == b"version two!"


def test_etag_changes_for_same_size_content(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "k.txt", b"aaaa")
    first = run(store.stat("bucket", "k.txt")).etag
    put_bytes(store, tmp_path, "bucket", "k.txt", b"bbbb")
    assert run(store.stat("bucket", "k.txt")).etag != first


NESTED_KEYS = ["z.txt", "in/y.txt", "in/x/2.txt", "inbox.txt", "in/x/1.txt", "out/a.txt", "a.txt"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", sorted(NESTED_KEYS)),
        ("in/", ["in/x/1.txt", "in/x/2.txt", "in/y.txt"]),
        ("in", ["in/x/1.txt", "in/x/2.txt", "in/y.txt", "inbox.txt"]),
        ("in/x/", ["in/x/1.txt", "in/x/2.txt"]),
        ("in/x/1", ["in/x/1.txt"]),
        ("out/", ["out/a.txt"]),
        ("missing/", []),
        ("zz", []),
    ],
)
def test_list_with_prefix(store: LocalStorage, tmp_path: Path, prefix: str, expected: list[str]) -> None:
    for key in NESTED_KEYS:
        put_bytes(store, tmp_path, "bucket", key, key.encode())

    assert listed(store, "bucket", prefix) == expected
    assert [o.key for o in run(store.list_page("bucket", prefix)).objects] == expected


def test_list_reports_sizes(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "a", b"1")
    put_bytes(store, tmp_path, "bucket", "b/c", b"123")
    page = run(store.list_page("bucket"))
    assert [(o.key, o.size) for o in page.objects] == [("a", 1), ("b/c", 3)]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6])
def test_list_page_visits_every_key_once_in_order(store: LocalStorage, tmp_path: Path, limit: int) -> None:
    keys = ["e.txt", "d/1", "c.txt", "b/sub/2", "a.txt"]
    for key in keys:
        put_bytes(store, tmp_path, "bucket", key, b"x")

    seen: list[str] = []
    token = None
    for _ in range(len(keys) + 1):  # bounded: at most one page per key, plus the last
        page = run(store.list_page("bucket", token=token, limit=limit))
        assert len(page.objects) <= limit
        seen += [o.key for o in page.objects]
        token = page.next_token
        if token is None:
            break
    assert token is None
    assert seen == sorted(keys)


def test_max_length_key_accepted(store: LocalStorage, tmp_path: Path) -> None:
    key = "/".join(["s" * 200] * 5) + "/" + "k" * 19
    assert len(key.encode()) == MAX_KEY_BYTES
    put_bytes(store, tmp_path, "bucket", key, b"long")
    assert listed(store, "bucket") == [key]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../escape.txt", id="dotdot"),
        pytest.param("a/../../escape.txt", id="dotdot-inside"),
        pytest.param("a/..", id="dotdot-last"),
        pytest.param("./a", id="dot"),
        pytest.param("a/./b", id="dot-inside"),
        pytest.param("/etc/escape.txt", id="absolute"),
        pytest.param("\\escape.txt", id="backslash-absolute"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a//b", id="empty-segment"),
        pytest.param("a/", id="trailing-slash"),
        pytest.param("", id="empty"),
        pytest.param("x" * (MAX_KEY_BYTES + 1), id="too-long"),
        pytest.param("é" * 513, id="too-long-utf8"),
        pytest.param("in/\udcff.txt", id="lone-surrogate"),
    ],
)
def test_bad_keys_rejected_and_nothing_written(
    store: LocalStorage, src: Path, tmp_path: Path, key: str
) -> None:
    before = snapshot(tmp_path)

    with pytest.raises(InvalidObjectKey):
        run(store.put(src, "bucket", key))
    with pytest.raises(InvalidObjectKey):
        run(store.get("bucket", key, tmp_path / "dest"))
    with pytest.raises(InvalidObjectKey):
        run(store.stat("bucket", key))
    with pytest.raises(InvalidObjectKey):
        run(store.delete("bucket", key))
    with pytest.raises(InvalidObjectKey):
        run(store.make_folder("bucket", key))
    staged = Path(store.staging_path())
    staged.write_bytes(b"staged")
    with pytest.raises(InvalidObjectKey):
        run(store.adopt(staged, "bucket", key))
    assert not staged.exists()  # adopted files are the store's: removed when they cannot be stored

    assert snapshot(tmp_path) == before


def test_key_segment_longer_than_a_file_name(store: LocalStorage, src: Path, root: Path) -> None:
    with pytest.raises(InvalidObjectKey):
        run(store.put(src, "bucket", "a" * 300))
    assert temp_files(root) == []


@pytest.mark.parametrize("prefix", ["../", "../other/", "../../"])
def test_list_prefix_cannot_escape_the_bucket(
    store: LocalStorage, tmp_path: Path, root: Path, prefix: str
) -> None:
    run(store.create_bucket("other"))
    put_bytes(store, tmp_path, "other", "private/secret.txt", b"secret")
    write(tmp_path / "outside.txt", b"outside the root")

    try:
        keys = listed(store, "bucket", prefix)
        page_keys = [o.key for o in run(store.list_page("bucket", prefix)).objects]
    except InvalidInput:
        return  # rejecting such a prefix is fine too
    assert keys == [] and page_keys == []


# --- buckets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket",
    ["ab", "a" * 64, "Upper", "under_score", "-dash", "dash-", "dot..dot", "sp ace", "../up", ".tmp", ""],
)
def test_invalid_bucket_names_rejected(store: LocalStorage, src: Path, root: Path, bucket: str) -> None:
    before = snapshot(root)
    with pytest.raises(InvalidInput):
        run(store.create_bucket(bucket))
    with pytest.raises(InvalidInput):
        run(store.put(src, bucket, "k"))
    assert snapshot(root) == before
    assert run(store.list_buckets()) == ["bucket"]


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "my.bucket", "1-2-3", "data-2024"])
def test_valid_bucket_names(store: LocalStorage, bucket: str) -> None:
    run(store.create_bucket(bucket))
    assert run(store.bucket_exists(bucket))
    assert bucket in run(store.list_buckets())


def test_create_bucket_twice_keeps_contents(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "k", b"keep me")
    run(store.create_bucket("bucket"))
    assert listed(store, "bucket") == ["k"]


def test_list_buckets_sorted_without_staging_folder(store: LocalStorage, root: Path) -> None:
    for name in ("zeta", "alpha", "mid"):
        run(store.create_bucket(name))
    assert (root / TMP_DIR).is_dir()
    assert run(store.list_buckets()) == ["alpha", "bucket", "mid", "zeta"]


def test_missing_bucket(store: LocalStorage, src: Path, tmp_path: Path) -> None:
    assert not run(store.bucket_exists("nope"))
    with pytest.raises(BucketNotFound):
        run(store.put(src, "nope", "k"))
    with pytest.raises(BucketNotFound):
        run(store.get("nope", "k", tmp_path / "dest"))
    with pytest.raises(BucketNotFound):
        run(store.stat("nope", "k"))
    with pytest.raises(BucketNotFound):
        run(store.delete("nope", "k"))
    with pytest.raises(BucketNotFound):
        listed(store, "nope")
    with pytest.raises(BucketNotFound):
        run(store.list_page("nope"))
    with pytest.raises(BucketNotFound):
        run(store.delete_bucket("nope"))
    assert not (tmp_path / "dest").exists()
    assert run(store.list_buckets()) == ["bucket"]


def test_missing_object(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "folder/present.txt", b"x")
    for key in ("absent.txt", "folder/absent.txt", "folder"):  # "folder" is a folder, not an object
        with pytest.raises(ObjectNotFound):
            run(store.get("bucket", key, tmp_path / "dest"))
        with pytest.raises(ObjectNotFound):
            run(store.stat("bucket", key))
        with pytest.raises(ObjectNotFound):
            store.open_path("bucket", key)
    with pytest.raises(ObjectNotFound):
        run(store.delete("bucket", "absent.txt"))
    assert not (tmp_path / "dest").exists()


def test_a_path_through_an_object_or_a_link_loop_is_no_object(
    store: LocalStorage, root: Path, tmp_path: Path
) -> None:
    """Not found (a 404), not an OS error (a 500): "a.txt/child" when a.txt is an object, and a
    key on a link loop a script could have left."""
    put_bytes(store, tmp_path, "bucket", "a.txt", b"a")
    os.symlink("loop", root / "bucket" / "loop")
    for key in ("a.txt/child", "loop", "loop/deeper"):
        with pytest.raises(ObjectNotFound):
            run(store.stat("bucket", key))
        with pytest.raises(ObjectNotFound):
            run(store.get("bucket", key, tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_adopt_into_a_missing_bucket_leaves_nothing_staged(store: LocalStorage, root: Path) -> None:
    staged = Path(store.staging_path())
    staged.write_bytes(b"uploaded body")
    with pytest.raises(BucketNotFound):
        run(store.adopt(staged, "gone", "k.txt"))
    assert temp_files(root) == []


def test_delete_object(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "a.txt", b"a")
    put_bytes(store, tmp_path, "bucket", "b.txt", b"b")
    run(store.delete("bucket", "a.txt"))
    assert listed(store, "bucket") == ["b.txt"]
    with pytest.raises(ObjectNotFound):
        run(store.stat("bucket", "a.txt"))


def test_delete_bucket_needs_force_when_not_empty(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "deep/inside.txt", b"data")

    with pytest.raises(Conflict):
        run(store.delete_bucket("bucket"))
    assert run(store.bucket_exists("bucket"))
    assert listed(store, "bucket") == ["deep/inside.txt"]

    run(store.delete_bucket("bucket", force=True))
    assert not run(store.bucket_exists("bucket"))
    assert run(store.list_buckets()) == []


def test_delete_empty_bucket(store: LocalStorage) -> None:
    run(store.delete_bucket("bucket"))
    assert run(store.list_buckets()) == []


def test_make_folder_is_not_an_object(store: LocalStorage) -> None:
    run(store.make_folder("bucket", "input/images"))
    assert listed(store, "bucket") == []
    assert run(store.bucket_exists("bucket"))


# --- atomic writes -------------------------------------------------------------------------------


def test_adopt_moves_without_copying(store: LocalStorage, root: Path) -> None:
    staged = Path(store.staging_path())
    staged.write_bytes(b"uploaded body")
    inode = staged.stat().st_ino

    info = run(store.adopt(staged, "bucket", "up/loaded.bin"))

    assert not staged.exists()
    path = store.open_path("bucket", "up/loaded.bin")
    assert path.stat().st_ino == inode
    assert path.read_bytes() == b"uploaded body"
    assert info.size == len(b"uploaded body")
    assert temp_files(root) == []


def test_staging_path_is_inside_the_root_on_the_same_filesystem(store: LocalStorage, root: Path) -> None:
    staged = Path(store.staging_path())
    assert staged.parent == root.resolve() / TMP_DIR
    assert staged.parent.stat().st_dev == (root / "bucket").stat().st_dev
    assert Path(store.staging_path()) != staged


def test_puts_leave_no_temporary_files(store: LocalStorage, root: Path, tmp_path: Path) -> None:
    for i in range(5):
        put_bytes(store, tmp_path, "bucket", f"k{i % 2}.txt", f"content {i}".encode())
    assert temp_files(root) == []
    assert sorted(p.name for p in (root / "bucket").iterdir()) == ["k0.txt", "k1.txt"]
    assert listed(store, "bucket") == ["k0.txt", "k1.txt"]
    assert run(store.list_buckets()) == ["bucket"]


def test_put_over_a_folder_is_a_conflict_and_cleans_up(
    store: LocalStorage, root: Path, tmp_path: Path
) -> None:
    put_bytes(store, tmp_path, "bucket", "a/b.txt", b"inside")
    with pytest.raises(Conflict):
        put_bytes(store, tmp_path, "bucket", "a", b"would hide the folder")
    assert listed(store, "bucket") == ["a/b.txt"]
    assert temp_files(root) == []


def test_put_under_an_object_is_a_conflict_and_cleans_up(
    store: LocalStorage, root: Path, tmp_path: Path
) -> None:
    put_bytes(store, tmp_path, "bucket", "a", b"an object")
    with pytest.raises(Conflict):
        put_bytes(store, tmp_path, "bucket", "a/b.txt", b"under it")
    assert listed(store, "bucket") == ["a"]
    assert temp_files(root) == []


def test_reader_never_sees_a_partial_object(store: LocalStorage, tmp_path: Path) -> None:
    size = 2 * 1024 * 1024
    versions = [write(tmp_path / "va", b"a" * size), write(tmp_path / "vb", b"b" * size)]
    run(store.put(versions[0], "bucket", "big.bin"))
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = store.open_path("bucket", "big.bin").read_bytes()
            if len(data) != size or data.count(data[:1]) != size:
                bad.append(f"{len(data)} bytes, mixed={data.count(b'a')}/{data.count(b'b')}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            run(store.put(versions[i % 2], "bucket", "big.bin"))
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert bad == []


def test_get_into_existing_file_replaces_it(store: LocalStorage, tmp_path: Path) -> None:
    put_bytes(store, tmp_path, "bucket", "k", b"new")
    dest = write(tmp_path / "dest", b"old content that is longer")
    run(store.get("bucket", "k", dest))
    assert dest.read_bytes() == b"new"


def test_root_is_created(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "root"
    LocalStorage(root)
    assert (root / TMP_DIR).is_dir()
    assert os.listdir(root) == [TMP_DIR]


def test_the_quick_check_of_keys_agrees_with_every_rule() -> None:
    """`validate_key` lets plain keys through on a quick check; it must refuse and accept exactly
    what the rule by rule check does, at the length limits too (in bytes, not characters)."""
    from sluice.storage import base

    segment_limit = base.MAX_SEGMENT_BYTES
    keys = [
        "a", "in/f1.txt", "a/b/c.json", ".hidden", "a/.b", "...", "a/...",
        "é" * (segment_limit // 2), "é" * (segment_limit // 2 + 1), "x" * segment_limit,
        "x" * (segment_limit + 1), "/".join(["s" * 200] * 5) + "/" + "k" * 19, "k" * 1025,
        "../a", "a/..", "./a", "a/./b", "/a", "\\a", "a\x00b", "a//b", "a/", "", "/", "//",
        "a/\udcff", "\ud800", "é/\udc80.txt",
    ]  # fmt: skip

    def outcome(check, key: str) -> str:  # type: ignore[no-untyped-def]
        try:
            return f"ok {check(key)}"
        except InvalidObjectKey as exc:
            return f"refused: {exc}"

    for key in keys:
        assert outcome(base.validate_key, key) == outcome(lambda k: base._refuse_key(k, k.split("/")), key), (
            key
        )

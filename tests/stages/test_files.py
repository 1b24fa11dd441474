"""stages.files: called directly, no runtime, no processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.files import AtomicFile, ListFiles, WriteFiles, atomic_write, list_files, read_bytes, read_text


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "b.txt").write_text("bee")
    (root / "a.txt").write_text("a")
    (root / "c.md").write_text("markdown")
    (root / ".hidden.txt").write_text("hidden!")
    (root / "sub" / "d.txt").write_text("dddd")
    (root / "sub" / "deeper" / "e.txt").write_text("eeeee")
    (root / "dir.txt").mkdir()  # a directory matching the pattern is not a file


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- ListFiles


def test_list_files_flat_sorted_with_sizes(tmp_path: Path) -> None:
    _tree(tmp_path)
    src = ListFiles()
    src.setup(root=str(tmp_path), pattern="*.txt")
    assert list(src) == [
        {"path": str(tmp_path / ".hidden.txt"), "size": 7},
        {"path": str(tmp_path / "a.txt"), "size": 1},
        {"path": str(tmp_path / "b.txt"), "size": 3},
    ]
    assert src.total() == 3
    assert len(src) == 3
    assert list(src) == list(src)  # iterable more than once


def test_list_files_recursive(tmp_path: Path) -> None:
    _tree(tmp_path)
    src = ListFiles()
    src.setup(root=str(tmp_path), pattern="*.txt", recursive=True)
    paths = [e["path"] for e in src]
    assert paths == sorted(paths)
    assert [os.path.relpath(p, tmp_path) for p in paths] == [
        ".hidden.txt",
        "a.txt",
        "b.txt",
        os.path.join("sub", "d.txt"),
        os.path.join("sub", "deeper", "e.txt"),
    ]
    assert src.total() == 5


def test_list_files_default_pattern_and_alias(tmp_path: Path) -> None:
    _tree(tmp_path)
    src = list_files(root=tmp_path)  # callable with the params, like a source function
    assert list_files is ListFiles
    assert {os.path.basename(e["path"]) for e in src} == {".hidden.txt", "a.txt", "b.txt", "c.md"}
    assert len(src) == 4


def test_list_files_follows_symlinked_files(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere")
    names = [os.path.basename(e["path"]) for e in list_files(root=tmp_path)]
    assert names == ["link.txt", "real.txt"]


def test_list_files_empty_dir(tmp_path: Path) -> None:
    src = list_files(root=tmp_path)
    assert list(src) == [] and src.total() == 0


def test_list_files_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="nope.*does not exist"):
        ListFiles().setup(root=str(missing))


def test_list_files_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ListFiles().setup(root=str(tmp_path / "f"))


def _images(root: Path) -> None:
    (root / "2024" / "june").mkdir(parents=True)
    for rel in ("a.jpg", "B.JPG", "c.jpeg", "d.png", "e.gif", "notes.txt", "2024/f.Png", "2024/june/g.jpg"):
        (root / rel).write_bytes(b"x" * len(rel))


def _rel(src: ListFiles, root: Path) -> list[str]:
    return [os.path.relpath(e["path"], root).replace(os.sep, "/") for e in src]


def test_list_files_several_patterns(tmp_path: Path) -> None:
    _images(tmp_path)
    src = list_files(root=tmp_path, pattern=["*.jpg", "*.jpeg", "*.png"], recursive=True)
    assert _rel(src, tmp_path) == ["2024/june/g.jpg", "a.jpg", "c.jpeg", "d.png"]  # case-sensitive by default
    assert src.total() == 4
    flat = list_files(root=tmp_path, pattern=("*.gif", "*.txt"))
    assert _rel(flat, tmp_path) == ["e.gif", "notes.txt"]
    for bad in ([], [1], {"*.jpg": 1}, 5):
        with pytest.raises(ValueError, match="pattern must be a pattern or a non-empty list"):
            ListFiles().setup(root=str(tmp_path), pattern=bad)  # type: ignore[arg-type]


def test_list_files_ignore_case(tmp_path: Path) -> None:
    _images(tmp_path)
    src = list_files(root=tmp_path, pattern=["*.JPG", "*.png"], recursive=True, ignore_case=True)
    assert _rel(src, tmp_path) == ["2024/f.Png", "2024/june/g.jpg", "B.JPG", "a.jpg", "d.png"]
    assert list_files(root=tmp_path, pattern="[a-b].jpg", ignore_case=True).total() == 2  # a.jpg, B.JPG


def test_list_files_skip_existing(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    _images(root)
    (out / "2024" / "june").mkdir(parents=True)
    (out / "a.jpg").write_bytes(b"done")  # a.jpg's output
    (out / "2024" / "june" / "g.jpg").write_bytes(b"done")
    (out / "d.jpg").mkdir()  # a directory there also counts as done
    params = {"root": str(root), "pattern": ["*.jpg", "*.jpeg", "*.png"], "recursive": True, "ignore_case": True}

    src = ListFiles()
    src.setup(**params, skip_existing=str(out / "{relstem}.jpg"))
    assert _rel(src, root) == ["2024/f.Png", "B.JPG", "c.jpeg"]
    assert src.total() == len(src) == 3
    assert src.skipped == 3

    by_name = ListFiles()
    by_name.setup(**params, skip_existing=str(out / "{stem}{suffix}"))  # a.jpg only: flat names, same suffix
    assert by_name.total() == 5 and by_name.skipped == 1

    # every field, formatted for the file it decides on
    fields = tmp_path / "fields"
    template = str(fields) + "/{relpath}/{relstem}/{name}+{stem}+{suffix}"
    every = dict(root=str(root), pattern="g.jpg", recursive=True, skip_existing=template)
    assert list_files(**every).total() == 1
    done = fields / "2024/june/g.jpg" / "2024/june/g" / "g.jpg+g+.jpg"
    done.parent.mkdir(parents=True)
    done.write_text("x")
    again = list_files(**every)
    assert again.total() == 0 and again.skipped == 1


def test_list_files_skip_existing_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _images(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "c.jpg").write_bytes(b"done")
    src = list_files(root=".", pattern="*.jp*g", skip_existing="thumbs/{relstem}.jpg")
    assert _rel(src, Path(".")) == ["a.jpg"]


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("out/{relstem}.{ext}", r"unknown field \{ext\}; use \{relpath\}, \{relstem\}, \{name\}, \{stem\}, \{suffix\}"),
        ("out/{}.jpg", r"unknown field \{\}"),
        ("out/{0}.jpg", r"unknown field \{0\}"),
        ("out/{relstem.upper}.jpg", "unknown field"),
        ("out/{relstem", "not a valid template"),
        ("out/all.jpg", "uses no field"),
        ("", "must be a path template"),
        (42, "must be a path template"),
    ],
)
def test_list_files_skip_existing_bad_templates(tmp_path: Path, template: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ListFiles().setup(root=str(tmp_path), skip_existing=template)  # type: ignore[arg-type]


# ---------------------------------------------------------------- read_text


def test_read_text_adds_text_and_keeps_fields(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes("héllo\r\nworld\n".encode())
    event = {"path": str(p), "size": 14}
    out = read_text(event)
    assert out == {"path": str(p), "size": 14, "text": "héllo\r\nworld\n"}
    assert "text" not in event  # a new dict


def test_read_text_encoding(tmp_path: Path) -> None:
    p = tmp_path / "latin.txt"
    p.write_bytes("café".encode("latin-1"))
    assert read_text({"path": str(p)}, encoding="latin-1")["text"] == "café"
    with pytest.raises(ValueError, match=r"latin\.txt.*not valid utf-8"):
        read_text({"path": str(p)})


def test_read_text_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gone.txt"):
        read_text({"path": str(tmp_path / "gone.txt")})
    with pytest.raises(ValueError, match="'path'"):
        read_text({"text": "x"})


def test_read_bytes(tmp_path: Path) -> None:
    p = tmp_path / "b.bin"
    p.write_bytes(b"\x00\xffbinary\r\n")
    event = {"path": str(p), "size": 10}
    assert read_bytes(event) == {"path": str(p), "size": 10, "data": b"\x00\xffbinary\r\n"}
    assert "data" not in event  # a new dict
    with pytest.raises(ValueError, match=r"read_bytes: cannot read '.*gone\.bin': No such file"):
        read_bytes({"path": str(tmp_path / "gone.bin")})
    with pytest.raises(ValueError, match="read_bytes: the event must be a dict with a str 'path'"):
        read_bytes({"name": "x"})


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_creates_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dir" / "out.bin"
    atomic_write(dest, b"one")
    assert dest.read_bytes() == b"one"
    atomic_write(dest, b"two", fsync=True)
    assert dest.read_bytes() == b"two"
    assert os.listdir(dest.parent) == ["out.bin"]
    mode = dest.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_write_rejects_str(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", "text")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "keep.txt"
    dest.write_bytes(b"old")

    # A failing replace (destination is a non-empty directory) leaves no temp behind.
    target_dir = tmp_path / "adir"
    (target_dir / "child").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic_write(target_dir, b"data")
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_file_commit_and_discard(tmp_path: Path) -> None:
    dest = tmp_path / "stream.txt"
    f = AtomicFile(dest)
    f.write("partial")
    assert not dest.exists()  # nothing visible before commit
    assert len(_leftovers(tmp_path)) == 1
    f.commit()
    f.commit()  # idempotent
    assert dest.read_text() == "partial"
    assert _leftovers(tmp_path) == []

    g = AtomicFile(dest, "wb")
    g.write(b"other")
    g.discard()
    assert dest.read_text() == "partial"
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        AtomicFile(dest, "a")


# ---------------------------------------------------------------- WriteFiles


def test_write_files_bytes_str_and_subdirs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = WriteFiles()
    sink.setup(out=str(out))
    assert out.is_dir()
    sink.handle({"name": "a.bin", "data": b"\x00\x01"})
    sink.handle({"name": "sub/b.txt", "data": "héllo"})
    sink.handle({"name": "./c.txt", "data": ""})
    sink.teardown()
    assert (out / "a.bin").read_bytes() == b"\x00\x01"
    assert (out / "sub" / "b.txt").read_bytes() == "héllo".encode()
    assert (out / "c.txt").read_bytes() == b""
    assert sink.written == 3
    assert _leftovers(out) == [] and _leftovers(out / "sub") == []


def test_write_files_overwrite(tmp_path: Path) -> None:
    """overwrite is about files already there (an earlier run's; a sink set up afresh is
    another run here); two inputs of one run naming one output are refused either way."""
    sink = WriteFiles()
    sink.setup(out=str(tmp_path))
    sink.handle({"name": "x", "data": "1"})
    again = WriteFiles()
    again.setup(out=str(tmp_path))
    again.handle({"name": "x", "data": "2"})
    assert (tmp_path / "x").read_text() == "2"

    (tmp_path / "y").write_text("first")
    strict = WriteFiles()
    strict.setup(out=str(tmp_path), overwrite=False)
    with pytest.raises(ValueError, match="already exists"):
        strict.handle({"name": "y", "data": "second"})
    assert (tmp_path / "y").read_text() == "first"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("/etc/passwd", "absolute"),
        ("../escape.txt", r"'\.\.'"),
        ("sub/../../escape.txt", r"'\.\.'"),
        ("..", r"'\.\.'"),
        ("", "non-empty"),
        (".", "does not name a file"),
        (42, "non-empty str"),
    ],
)
def test_write_files_refuses_names_escaping_out(tmp_path: Path, name: object, match: str) -> None:
    out = tmp_path / "out"
    sink = WriteFiles()
    sink.setup(out=str(out))
    with pytest.raises(ValueError, match=match):
        sink.handle({"name": name, "data": b"x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert list(out.iterdir()) == []


def test_write_files_refuses_symlink_out_of_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    sink = WriteFiles()
    sink.setup(out=str(out))
    (out / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="leads outside"):
        sink.handle({"name": "link/new/x.txt", "data": b"x"})
    assert list(outside.iterdir()) == []


def test_write_files_bad_data(tmp_path: Path) -> None:
    sink = WriteFiles()
    sink.setup(out=str(tmp_path))
    with pytest.raises(ValueError, match="'data' of 'x' must be bytes or str"):
        sink.handle({"name": "x", "data": [1, 2]})
    with pytest.raises(ValueError, match="must be a dict"):
        sink.handle(["x", b"data"])  # type: ignore[arg-type]
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        sink.handle({"name": "d", "data": b"x"})


@pytest.mark.parametrize("overwrite", [True, False])
def test_write_files_skip_existing(tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "old.jpg").write_bytes(b"old")
    sink = WriteFiles()
    sink.setup(out=str(tmp_path), skip_existing=True, overwrite=overwrite)
    sink.handle({"name": "sub/old.jpg", "data": b"new"})  # no error: left as it is
    sink.handle({"name": "sub/new.jpg", "data": b"new"})
    sink.handle({"name": "sub/new.jpg", "data": b"new"})  # the same event again (redelivered): left
    with pytest.raises(ValueError, match="two events of this run name one output"):
        sink.handle({"name": "sub/new.jpg", "data": b"newer"})  # another event for the same output
    assert (tmp_path / "sub" / "old.jpg").read_bytes() == b"old"
    assert (tmp_path / "sub" / "new.jpg").read_bytes() == b"new"
    assert (sink.written, sink.skipped) == (1, 2)
    assert _leftovers(tmp_path / "sub") == []
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        sink.handle({"name": "d.jpg", "data": b"x"})


def test_write_files_without_skip_existing_replaces(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"old")
    sink = WriteFiles()
    sink.setup(out=str(tmp_path))
    sink.handle({"name": "x.jpg", "data": b"new"})
    assert (tmp_path / "x.jpg").read_bytes() == b"new"
    assert (sink.written, sink.skipped) == (1, 0)


@pytest.mark.parametrize("param", ["ignore_case", "recursive"])
def test_list_files_reads_flags_strictly(tmp_path: Path, param: str) -> None:
    lf = ListFiles()
    lf.setup(root=str(tmp_path), **{param: "false"})  # as ${VAR} gives it: false, not truthy
    assert getattr(lf, param) is False
    with pytest.raises(ValueError, match=f"ListFiles: {param} must be true or false, got 'maybe'"):
        ListFiles().setup(root=str(tmp_path), **{param: "maybe"})


@pytest.mark.parametrize("param", ["overwrite", "fsync", "skip_existing"])
def test_write_files_reads_flags_strictly(tmp_path: Path, param: str) -> None:
    wf = WriteFiles()
    wf.setup(out=str(tmp_path), **{param: "No"})
    assert getattr(wf, param) is False
    with pytest.raises(ValueError, match=f"WriteFiles: {param} must be true or false, got 2"):
        WriteFiles().setup(out=str(tmp_path), **{param: 2})


# ---------------------------------------------------------------- one output, one input


@pytest.mark.parametrize("in_a_run", [False, True])
@pytest.mark.parametrize("mode", [{}, {"overwrite": False}, {"skip_existing": True}])
def test_write_files_refuses_a_second_input_for_one_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_a_run: bool, mode: dict[str, bool]
) -> None:
    """a.jpg and a.png both thumbnailed to a.jpg: the second overwrote the first and both
    counted as written. Two sinks stand for two worker processes of one run: they share
    only the run directory."""
    out = tmp_path / "out"
    if in_a_run:
        monkeypatch.setenv("SEDAMP_RUN_DIR", str(tmp_path / "run"))
        (tmp_path / "run").mkdir()
    first, second = WriteFiles(), WriteFiles()
    first.setup(out=str(out), **mode)
    second.setup(out=str(out), **mode)
    first.handle({"name": "a.jpg", "data": b"from jpg", "source": "in/a.jpg"})
    other = second if in_a_run else first  # without a run directory, one process knows only its own
    dest = str(out / "a.jpg")
    message = (
        f"WriteFiles: 'in/a.png' and 'in/a.jpg' both name the output {dest!r}; it is 'in/a.jpg''s, "
        "and 'in/a.png' is not written"
    )
    with pytest.raises(ValueError) as err:
        other.handle({"name": "a.jpg", "data": b"from png", "source": "in/a.png"})
    assert str(err.value).startswith(message)
    assert "keep_ext: true" in str(err.value)
    assert (out / "a.jpg").read_bytes() == b"from jpg"
    assert first.written + second.written == 1
    if mode != {"overwrite": False}:  # which refuses any file already there, as before
        # the same input again (a retry, a redelivered event) is no collision
        other.handle({"name": "a.jpg", "data": b"from jpg", "source": "in/a.jpg"})
    assert (out / "a.jpg").read_bytes() == b"from jpg"
    assert _leftovers(out) == []
    if in_a_run:
        assert [p.name.startswith(".claim.") for p in (tmp_path / "run" / "outputs").iterdir()] == [False]


@pytest.mark.parametrize("mode", [{}, {"skip_existing": True}])
def test_write_files_a_file_of_an_earlier_run_is_no_collision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: dict[str, bool]
) -> None:
    """What an earlier run wrote is replaced (overwrite, the default) or kept
    (skip_existing), as before: only two inputs of one run collide."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"earlier run")
    monkeypatch.setenv("SEDAMP_RUN_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    sink = WriteFiles()
    sink.setup(out=str(out), **mode)
    sink.handle({"name": "a.jpg", "data": b"this run", "source": "in/a.png"})
    expected = b"earlier run" if mode else b"this run"
    assert (out / "a.jpg").read_bytes() == expected
    assert (sink.written, sink.skipped) == ((0, 1) if mode else (1, 0))


def test_list_files_warns_when_two_inputs_name_one_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "a.png", "b.png"):
        (tmp_path / "in" / name).write_bytes(b"x")
    template = str(tmp_path / "out" / "{relstem}.jpg")
    with caplog.at_level("WARNING", logger="stages.files"):
        listed = list(ListFiles(root=str(tmp_path / "in"), skip_existing=template))
    assert len(listed) == 3
    (warning,) = [r.getMessage() for r in caplog.records]
    a_jpg, a_png = str(tmp_path / "in" / "a.jpg"), str(tmp_path / "in" / "a.png")
    assert warning.startswith(f"ListFiles: {a_jpg!r}, {a_png!r} all name the output {str(tmp_path / 'out' / 'a.jpg')!r}")

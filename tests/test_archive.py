"""Safe, resumable tarball extraction (xllm_cli.corpora.archive)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from xllm_cli.corpora.archive import is_extracted, marker_path, safe_extract
from xllm_cli.errors import XllmError


def make_tar(path, members, mode="w:gz"):
    """``members``: (name, kind, payload) with kind file/dir/sym/lnk/chr/fifo."""
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "lnk"):
                info.linkname = payload
            tar.addfile(info)
    return path


@pytest.fixture
def corpus(tmp_path):
    """dest = tmp/corpus/wav; anything written to tmp/ outside corpus/ is an escape."""
    dest = tmp_path / "corpus" / "wav"
    dest.mkdir(parents=True)
    return tmp_path, dest


def entries_outside(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("corpus",) and not p.name.endswith(".tar.gz"))


def test_extracts_merges_and_resumes(corpus):
    tmp_path, dest = corpus
    a = make_tar(dest / "S0002.tar.gz", [("train", "dir", None), ("train/S0002", "dir", None),
                                          ("train/S0002/a.wav", "file", "aa"), ("./train/S0002/link.wav", "sym", "a.wav")])
    b = make_tar(dest / "S0003.tar.gz", [("train/S0003/b.wav", "file", "bb"), ("train/S0003/hard.wav", "lnk", "train/S0003/b.wav")])
    assert safe_extract(a, dest) is True
    assert safe_extract(b, dest) is True  # merges into the existing train/
    assert (dest / "train/S0002/a.wav").read_text() == "aa"
    assert (dest / "train/S0002/link.wav").read_text() == "aa"
    assert (dest / "train/S0003/hard.wav").read_text() == "bb"
    assert is_extracted(a, dest) and marker_path(a, dest).name == ".S0002.tar.gz.extracted"
    assert safe_extract(a, dest) is False  # marker: skipped on a rerun
    assert not [p for p in os.listdir(dest) if p.endswith(".partial")]


@pytest.mark.parametrize(
    "member, problem",
    [
        (("../x", "file", "evil"), "'..'"),
        (("train/../../x", "file", "evil"), "'..'"),
        (("/tmp/xllm_abs_evil", "file", "evil"), "absolute path"),
        (("link", "sym", "/etc/passwd"), "symlink to absolute path"),
        (("train/link", "sym", "../../x"), "points outside"),
        (("hard", "lnk", "../x"), "'..'"),
        (("dev", "chr", None), "device file"),
        (("pipe", "fifo", None), "FIFO"),
    ],
)
def test_rejects_members_that_escape_or_are_special(corpus, member, problem):
    tmp_path, dest = corpus
    tarball = make_tar(tmp_path / "evil.tar.gz", [("train/ok.wav", "file", "fine"), member])
    with pytest.raises(XllmError) as e:
        safe_extract(tarball, dest)
    message = str(e.value)
    assert "evil.tar.gz" in message and problem in message and "\n" not in message
    assert entries_outside(tmp_path) == []
    assert not os.path.exists("/tmp/xllm_abs_evil")
    # nothing from the rejected tarball stays, and it is not marked done
    assert os.listdir(dest) == []
    assert not is_extracted(tarball, dest)


def test_symlink_that_escapes_only_through_another_link_is_caught(corpus):
    tmp_path, dest = corpus
    tarball = make_tar(tmp_path / "evil.tar.gz", [("a", "sym", "."), ("a/l", "sym", "../x"), ("a/l/f", "file", "evil")])
    with pytest.raises(XllmError, match="points outside"):
        safe_extract(tarball, dest)
    assert entries_outside(tmp_path) == [] and os.listdir(dest) == []


def test_symlink_redirected_by_a_later_link_is_caught(corpus):
    tmp_path, dest = corpus
    # l -> d/../x is inside while d does not exist; d -> . then sends l outside.
    tarball = make_tar(tmp_path / "evil.tar.gz", [("l", "sym", "d/../x"), ("d", "sym", ".")])
    with pytest.raises(XllmError, match="points outside"):
        safe_extract(tarball, dest)
    tarball = make_tar(tmp_path / "evil2.tar.gz", [("l", "sym", "d/../x"), ("d", "sym", "."), ("l/sub/f", "file", "evil")])
    with pytest.raises(XllmError, match="leaves the destination"):
        safe_extract(tarball, dest)
    assert entries_outside(tmp_path) == [] and os.listdir(dest) == []


def test_write_through_symlink_inside_stays_inside(corpus):
    tmp_path, dest = corpus
    tarball = make_tar(tmp_path / "ok.tar.gz", [("real", "dir", None), ("alias", "sym", "real"), ("alias/f.wav", "file", "x")])
    safe_extract(tarball, dest)
    assert (dest / "real" / "f.wav").read_text() == "x"


def test_corrupt_and_truncated_archives_give_one_line(corpus):
    tmp_path, dest = corpus
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not a tarball at all" * 10)
    with pytest.raises(XllmError, match=r"garbage.tar.gz: corrupt or truncated archive") as error:
        safe_extract(garbage, dest)
    assert "\n" not in str(error.value)  # tarfile's own message lists each method tried on a line
    good = make_tar(tmp_path / "good.tar.gz", [(f"train/f{i}.wav", "file", os.urandom(5000)) for i in range(20)])
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(XllmError, match=r"truncated.tar.gz: corrupt or truncated archive"):
        safe_extract(truncated, dest)
    assert os.listdir(dest) == []


def test_killed_run_leftovers_are_cleaned(corpus):
    tmp_path, dest = corpus
    tarball = make_tar(dest / "S9.tar.gz", [("test/S9/a.wav", "file", "a")])
    leftover = dest / ".S9.tar.gz.partial" / "test"
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("half")
    safe_extract(tarball, dest)
    assert sorted(os.listdir(dest / "test" / "S9")) == ["a.wav"]
    assert not (dest / ".S9.tar.gz.partial").exists()


def test_missing_archive(corpus):
    tmp_path, dest = corpus
    with pytest.raises(XllmError, match="archive not found"):
        safe_extract(tmp_path / "nope.tar.gz", dest)

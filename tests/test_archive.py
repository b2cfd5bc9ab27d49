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


# --- issue 12: several tarballs together ------------------------------------


def test_links_from_several_tarballs_cannot_lead_out(corpus):
    """Each tarball is safe alone; merged, ``x -> .`` then ``x/up -> ..`` would point above the
    destination, and a third tarball would write through it."""
    tmp_path, dest = corpus
    a = make_tar(tmp_path / "a.tar.gz", [("x", "sym", ".")])
    b = make_tar(tmp_path / "b.tar.gz", [("x/up", "sym", "..")])
    c = make_tar(tmp_path / "c.tar.gz", [("x/up/evil", "file", "evil")])
    safe_extract(a, dest)
    with pytest.raises(XllmError, match="x/up': symlink to '..' points outside") as e:
        safe_extract(b, dest)
    assert "\n" not in str(e.value)
    assert not os.path.lexists(dest / "up") and not is_extracted(b, dest)
    safe_extract(c, dest)  # with no link out left, x/up/ is a plain folder inside
    assert (dest / "up" / "evil").read_text() == "evil"
    assert not (dest.parent / "evil").exists() and entries_outside(tmp_path) == []


def test_write_through_a_link_an_earlier_tarball_made_that_leaves_is_refused(corpus):
    """A link left by an earlier tarball (or redirected by another) is never written through
    when it leads outside; ``wav/up`` made as ``a/../..``-style chains included."""
    tmp_path, dest = corpus
    (dest / "deep").mkdir()
    os.symlink("../..", dest / "deep" / "up")  # as if merged from earlier tarballs: leads to tmp/
    c = make_tar(tmp_path / "c.tar.gz", [("deep/up/evil", "file", "evil")])
    with pytest.raises(XllmError, match="leaves the destination"):
        safe_extract(c, dest)
    assert entries_outside(tmp_path) == []


def test_users_absolute_folder_link_is_still_merged_into(corpus, tmp_path):
    tmp, dest = corpus
    elsewhere = tmp / "disk2" / "train"
    elsewhere.mkdir(parents=True)
    os.symlink(elsewhere, dest / "train")
    a = make_tar(tmp / "a.tar.gz", [("train/S1/a.wav", "file", "aa")])
    safe_extract(a, dest)
    assert (elsewhere / "S1" / "a.wav").read_text() == "aa"


@pytest.mark.parametrize("kind, payload", [("file", "oops"), ("sym", "other")])
def test_later_tarball_never_replaces_an_extracted_folder(corpus, kind, payload):
    tmp_path, dest = corpus
    a = make_tar(tmp_path / "a.tar.gz", [("train/S1/a.wav", "file", "aa")])
    b = make_tar(tmp_path / "b.tar.gz", [("dev/S2/b.wav", "file", "bb"), ("train", kind, payload)])
    safe_extract(a, dest)
    with pytest.raises(XllmError, match=r"b.tar.gz: member 'train': would replace the folder .*train") as e:
        safe_extract(b, dest)
    assert "\n" not in str(e.value)
    assert (dest / "train" / "S1" / "a.wav").read_text() == "aa"
    assert not (dest / "dev").exists()  # checked before anything moved
    assert not is_extracted(b, dest)


def test_member_replacing_a_folder_of_the_same_tarball_is_refused(corpus):
    tmp_path, dest = corpus
    a = make_tar(tmp_path / "a.tar.gz", [("train/S1/a.wav", "file", "aa"), ("train", "file", "oops")])
    with pytest.raises(XllmError, match="would replace the folder"):
        safe_extract(a, dest)
    assert os.listdir(dest) == []

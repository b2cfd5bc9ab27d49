"""Safe, resumable extraction of corpus tarballs.

Corpora arrive as tarballs from the internet; a tarball is untrusted input. We
extract it so that nothing can land outside the destination folder:

* member names that are absolute or contain a ``..`` component are rejected;
* symbolic links and hard links must point inside the destination;
* device files, FIFOs and other special members are rejected;
* every write goes through a path whose real location (symlinks resolved) is
  checked to be inside the destination, also when merging into what earlier
  tarballs made: a relative link is followed only while it stays inside, so
  links made by several tarballs together cannot lead out;
* an existing folder is never deleted or replaced by a file or a link.

A tarball is first unpacked into a hidden staging folder beside its final
place and only moved into place when every member passed, so a rejected or
corrupt tarball leaves nothing behind (the staging folder is removed). A marker
file per tarball (``.<name>.extracted``) makes a rerun skip what was done: a
job killed half-way redoes only the tarball it was working on.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import XllmError
from ..fsutil import atomic_write_text

MARKER_SUFFIX = ".extracted"
STAGING_SUFFIX = ".partial"
_COPY_BUFFER = 1 << 20


def marker_path(archive: str | Path, dest: str | Path) -> Path:
    """Where the 'done' marker of ``archive`` extracted into ``dest`` lives."""
    return Path(dest) / f".{Path(archive).name}{MARKER_SUFFIX}"


def is_extracted(archive: str | Path, dest: str | Path) -> bool:
    return marker_path(archive, dest).is_file()


def _inside(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (both real, absolute paths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _safe_member_name(archive: Path, name: str) -> PurePosixPath:
    """The member's path relative to the destination, or a one-line error."""
    if "\x00" in name:
        raise XllmError(f"{archive}: member '{name!r}': NUL byte in the name; refusing to extract")
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise XllmError(f"{archive}: member '{name}': absolute path; refusing to extract")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise XllmError(f"{archive}: member '{name}': path leaves the destination ('..'); refusing to extract")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def check_members(archive: str | Path, members: list[tarfile.TarInfo]) -> None:
    """Reject a list of members up front (used by tests and by callers that list first)."""
    archive = Path(archive)
    for member in members:
        _check_member(archive, member)


def _check_member(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    rel = _safe_member_name(archive, member.name)
    if member.isfile() or member.isdir():
        return rel
    if member.issym():
        target = member.linkname
        if target.startswith("/") or not target:
            raise XllmError(f"{archive}: member '{member.name}': symlink to absolute path '{target}'; refusing to extract")
        # Resolve the link text lexically against the member's folder.
        depth = 0
        for part in (rel.parent / target).parts:
            if part == "..":
                depth -= 1
            elif part not in ("", "."):
                depth += 1
            if depth < 0:
                raise XllmError(f"{archive}: member '{member.name}': symlink to '{target}' points outside; refusing to extract")
        return rel
    if member.islnk():
        _safe_member_name(archive, member.linkname)  # a hard link names another member
        return rel
    kind = "device file" if (member.ischr() or member.isblk()) else "FIFO" if member.isfifo() else "special member"
    raise XllmError(f"{archive}: member '{member.name}': {kind}; refusing to extract")


def _plan_merge(archive: Path, src: Path, dst: Path, anchor: str, moves: list[tuple[Path, Path, str]]) -> None:
    """Check, before anything moves, where each staged entry lands; collect the moves.

    ``anchor`` is the real folder the entry must stay in: the destination, or the
    target of an absolute symlink the user made (``wav/train -> /disk2/train``;
    a tarball can never make an absolute link, they are refused). Rules:

    * an existing folder is merged into; a symlink to a folder only when it is
      absolute (the user's) or stays inside ``anchor`` -- a relative link a
      tarball made can lead anywhere once several tarballs are merged
      (``x -> .`` then ``x/y -> ..``), so writing through one that leaves is refused;
    * an existing folder is never deleted or replaced by a file or link (a later
      tarball with a plain file ``train`` would otherwise wipe every extracted
      speaker, and the markers would hide it): that is an error;
    * an existing file (or link) is replaced, so a rerun after a kill redoes a tarball.
    """
    src_is_dir = src.is_dir() and not src.is_symlink()
    if os.path.lexists(dst) and os.path.isdir(dst):
        if not src_is_dir:
            kind = "symlink" if src.is_symlink() else "file"
            raise XllmError(f"{archive}: member '{_rel(src)}': would replace the folder {dst} with a {kind}; "
                            f"refusing to extract (nothing was changed)")
        real = os.path.realpath(dst)
        if os.path.islink(dst):
            link = os.readlink(dst)
            if os.path.isabs(link):
                anchor = real
            elif not _inside(real, anchor):
                raise XllmError(f"{archive}: member '{_rel(src)}': {dst} is a symlink to '{link}', which leaves "
                                f"the destination; refusing to extract through it (a link of your own must be absolute)")
        with os.scandir(src) as it:
            for entry in sorted(it, key=lambda e: e.name):
                _plan_merge(archive, Path(entry.path), dst / entry.name, anchor, moves)
        return
    moves.append((src, dst, anchor))


def _rel(staged: Path) -> str:
    """A staged path as the member name it came from (below the ``.<name>.partial`` folder)."""
    parts = staged.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].startswith(".") and parts[i].endswith(STAGING_SUFFIX):
            return "/".join(parts[i + 1 :])
    return str(staged)


def _place(archive: Path, src: Path, dst: Path, anchor: str) -> None:
    """Move one staged entry (file, link or whole new folder) onto ``dst``, then check its links.

    The links inside were checked against the staging folder; placed through a
    followed link they sit elsewhere, so each must still resolve inside ``anchor``.
    A link that does not is removed again (so nothing can ever write through it).
    """
    if os.path.lexists(dst):  # a file or a link (folders were planned into): replace it
        os.unlink(dst)
    os.replace(src, dst)
    links = [str(dst)] if os.path.islink(dst) else []
    if not links and os.path.isdir(dst):
        for dirpath, dirnames, filenames in os.walk(dst):
            links += [os.path.join(dirpath, n) for n in dirnames + filenames if os.path.islink(os.path.join(dirpath, n))]
    for link in links:
        if not _inside(os.path.realpath(link), anchor):
            target = os.readlink(link)
            os.unlink(link)
            raise XllmError(f"{archive}: member '{_rel(src)}{link[len(str(dst)):]}': symlink to '{target}' points "
                            f"outside once merged into {dst.parent}; refusing to extract")


def safe_extract(archive: str | Path, dest: str | Path, resume: bool = True) -> bool:
    """Extract ``archive`` into ``dest`` safely; return False when it was already done.

    Raises a one-line :class:`XllmError` naming the archive (and member) for a
    corrupt or truncated archive or a member that would escape ``dest``; nothing
    from such an archive is left in ``dest``.
    """
    archive = Path(archive)
    dest = Path(dest)
    if resume and is_extracted(archive, dest):
        return False
    if not archive.is_file():
        raise XllmError(f"{archive}: archive not found")
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{archive.name}{STAGING_SUFFIX}"
    if staging.exists():  # left by a killed run
        shutil.rmtree(staging)
    staging.mkdir()
    root = os.path.realpath(staging)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    _extract_member(archive, tar, member, root)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and not _is_archive_error(e):
                raise XllmError(f"{archive}: cannot extract into {dest}: {e.strerror or e}") from None
            raise XllmError(f"{archive}: corrupt or truncated archive ({_one_line_reason(e)})") from None
        _check_links(archive, staging, root)
        # Plan (check) everything first: a refused tarball leaves the destination as it was.
        moves: list[tuple[Path, Path, str]] = []
        _plan_merge(archive, staging, dest, os.path.realpath(dest), moves)
        for src, dst, anchor in moves:
            _place(archive, src, dst, anchor)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(marker_path(archive, dest), f"{archive.name}\n")
    return True


def _check_links(archive: Path, staging: Path, root: str) -> None:
    """Every symlink, once all are in place, must still resolve inside the destination.

    (A link checked when it was made can be redirected by a later one, e.g.
    ``l -> d/../x`` followed by ``d -> .``.)
    """
    for dirpath, dirnames, filenames in os.walk(staging):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                rel = os.path.relpath(path, staging)
                raise XllmError(f"{archive}: member '{rel}': symlink to '{os.readlink(path)}' points outside; refusing to extract")


def _one_line_reason(e: BaseException) -> str:
    """tarfile's "could not be opened" error lists every compression it tried, a line each."""
    if isinstance(e, tarfile.ReadError) and "could not be opened" in str(e):
        return "not a tar, tar.gz, tar.bz2 or tar.xz file"
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _is_archive_error(e: OSError) -> bool:
    """gzip/bz2/lzma raise OSError subclasses for bad data; real I/O errors carry an errno."""
    return e.errno is None


def _extract_member(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, root: str) -> None:
    rel = _check_member(archive, member)
    if str(rel) == ".":
        return
    target = os.path.join(root, *rel.parts)
    parent = os.path.dirname(target)
    # A symlink extracted earlier could redirect this write: check the real folder
    # (realpath resolves the part that exists) before creating anything.
    if not _inside(os.path.realpath(parent), root):
        raise XllmError(f"{archive}: member '{member.name}': path goes through a symlink that leaves the destination; refusing to extract")
    os.makedirs(parent, exist_ok=True)
    if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target) and not os.path.islink(target)):
        if os.path.isdir(target) and not os.path.islink(target):
            raise XllmError(f"{archive}: member '{member.name}': would replace the folder of an earlier member; "
                            f"refusing to extract")
        os.unlink(target)
    if member.isdir():
        os.makedirs(target, exist_ok=True)
        return
    if member.issym():
        real = os.path.realpath(os.path.join(os.path.realpath(parent), member.linkname))
        if not _inside(real, root):
            raise XllmError(f"{archive}: member '{member.name}': symlink to '{member.linkname}' points outside; refusing to extract")
        os.symlink(member.linkname, target)
        return
    if member.islnk():
        source = os.path.join(root, *_safe_member_name(archive, member.linkname).parts)
        real = os.path.realpath(source)
        if not _inside(real, root) or not os.path.isfile(real):
            raise XllmError(f"{archive}: member '{member.name}': hard link to '{member.linkname}', which is not a file extracted before; refusing to extract")
        shutil.copyfile(real, target)
        return
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - isfile() members always have data
        raise XllmError(f"{archive}: member '{member.name}': no data")
    with source, open(target, "xb") as out:
        shutil.copyfileobj(source, out, _COPY_BUFFER)
    os.chmod(target, (member.mode & 0o755) | 0o600)
    os.utime(target, (member.mtime, member.mtime))

"""Replacing a whole directory at once: build it beside the old one, then rename it into place.

A data directory is several files that must agree (wav.scp, utt2spk, text ...).
Writing them one by one in place, a full disk or a kill half-way leaves files of
different lengths. Instead every file is written into a temporary sibling
(``mkdtemp``), and only when all are complete is the old directory renamed aside
and the new one renamed onto its name; the old one is removed last. Until that
rename the old directory is untouched, so a failure leaves it exactly as it was.

What the writer does not produce but the old directory holds (a user's
``conf/``, ``cmvn``, logs, ``.backup.N``, converted audio ...) is carried over:
hard links (no copy of the data, the old directory stays intact) with a plain
copy where the file system has no hard links.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import XllmError
from ..fsutil import apply_umask


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry(src: Path, dst: Path) -> None:
    """``src`` (file, folder or symlink) recreated at ``dst`` from hard links."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


class StagedDir:
    """A new version of ``root`` under construction in ``self.tmp``; ``commit()`` puts it in place.

    ``carry(name)`` says which entries of the old ``root`` to bring into the new one
    (those the new one does not have already); the default brings everything.
    """

    def __init__(self, root: str | Path, carry: Callable[[str], bool] = lambda name: True):
        root = Path(root)
        if root.is_symlink():  # data/train -> /big/disk/train: replace the folder it points to
            root = root.resolve()
        if root.exists() and not root.is_dir():
            raise XllmError(f"{root}: exists and is not a directory; give another output directory")
        root.parent.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.carry = carry
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self) -> None:
        """Carry the old directory's other entries over, then swap the new one in."""
        try:
            self._carry_over()
            apply_umask(self.tmp)  # mkdtemp made it 0700
            if self.root.is_dir():  # keep the mode the user gave the old folder
                os.chmod(self.tmp, stat.S_IMODE(os.stat(self.root).st_mode))
        except BaseException:
            self.discard()
            raise
        aside = None
        if self.root.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".old", dir=self.root.parent))
            os.rename(self.root, aside)  # onto the empty folder mkdtemp made
        try:
            os.rename(self.tmp, self.root)
        except BaseException:
            if aside is not None:
                os.rename(aside, self.root)
            self.discard()
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def _carry_over(self) -> None:
        if not self.root.is_dir():
            return
        for entry in sorted(os.listdir(self.root)):
            if self.carry(entry) and not os.path.lexists(self.tmp / entry):
                _carry(self.root / entry, self.tmp / entry)


@contextlib.contextmanager
def replacing_dir(root: str | Path, carry: Callable[[str], bool] = lambda name: True):
    """``with replacing_dir(root) as tmp:`` write the new ``root`` into ``tmp``; it replaces
    ``root`` when the block ends without an error, and is removed otherwise."""
    staged = StagedDir(root, carry)
    try:
        yield staged.tmp
    except BaseException:
        staged.discard()
        raise
    staged.commit()

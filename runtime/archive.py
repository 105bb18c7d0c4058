"""Safe extraction of a bundle archive (.tar.gz / .tgz).

Bundles travel between machines, so an archive is untrusted input. Every member
is checked before anything is written: no absolute names, no '..', no links,
no special files, nothing that resolves outside the destination. On Pythons
with tarfile's "data" filter (3.12+, and 3.9-3.11 security releases) it is
applied as well; the checks here make older Pythons just as safe.
"""
from __future__ import annotations

import os
import re
import tarfile
import zlib
from pathlib import Path
from typing import List

from .errors import BundleError, one_line


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract `archive` into the existing empty directory `dest`, or raise BundleError."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, dest, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - only on unpatched Pythons before 3.12
                tar.extractall(dest, members=members)
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(
            f"bundle {archive}: cannot extract the archive ({one_line(exc)}); "
            "pass a bundle directory or a .tar.gz made by edgesmith, or copy it again"
        ) from None


def _checked_members(tar: tarfile.TarFile, dest: Path, archive: Path) -> List[tarfile.TarInfo]:
    dest_real = os.path.realpath(dest)
    members = tar.getmembers()
    for member in members:
        problem = _member_problem(member, dest_real)
        if problem:
            raise BundleError(
                f"bundle {archive}: archive member {member.name!r} {problem}; refusing to extract "
                "(the archive is damaged or malicious); rebuild the bundle archive with edgesmith"
            )
        # Drop setuid/setgid/sticky and group/world write bits, as the "data"
        # filter does, so older Pythons do not recreate them either.
        member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    return members


def _member_problem(member: tarfile.TarInfo, dest_real: str) -> str:
    name = member.name
    # Check both separators: an archive made on (or extracted on) Windows may use '\'.
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' component"
    if member.issym():
        return f"is a symlink (to {member.linkname!r})"
    if member.islnk():
        return f"is a hardlink (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "is a device, fifo or other special file"
    target = os.path.realpath(os.path.join(dest_real, name))
    if target != dest_real and not target.startswith(dest_real + os.sep):
        return "would be extracted outside the destination directory"
    return ""

"""Safe extraction of a bundle archive (.tar.gz / .tgz).

Bundles travel between machines, so an archive is untrusted input, and it is
checked in full before anything is written:

1. a first pass reads every member header (skipping the data) and
   manifest.json's bytes. Members must be safe (no absolute names, no '..', no
   links, no special or sparse files, nothing that resolves outside the
   destination) and exactly what the manifest lists: a file member must be
   manifest.json or a "files" entry with the size the manifest gives, a
   directory must hold a listed file, no name may appear twice, and so the
   total can never exceed the manifest's total. A 14 MB archive holding an
   unlisted 3 GiB member is refused here, having written nothing;
2. a second pass writes the files, each copied with a byte limit of its
   manifest size (a header that lies cannot write more than declared), with
   the checks of the first pass made again on what is actually read.

If anything fails, whatever was written is removed: the destination is left
empty. Sizes and names are checked here; the sha256 of every file is checked
by load_bundle once the files are on disk (integrity.verify_files).
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import IO, Dict, List, Optional, Set

from .errors import BundleError, one_line
from .manifest import MANIFEST_NAME, Manifest, missing_manifest, parse_manifest

MAX_MANIFEST_BYTES = 16 << 20  # read into memory whole; real ones are a few KiB
MAX_MEMBERS_BEFORE_MANIFEST = 10000  # headers held (not written) until the manifest says what belongs
CHUNK = 1 << 20
REFUSE = "refusing to extract (the archive is damaged or malicious); rebuild the bundle archive with edgesmith"


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract `archive` into the existing empty directory `dest`, or raise BundleError (leaving `dest` empty)."""
    plan = _Plan(archive, dest)
    try:
        with open(archive, "rb") as raw:
            _scan(raw, plan)  # writes nothing
            raw.seek(0)
            _write(raw, plan)
    except BundleError:
        _empty(dest)
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        _empty(dest)
        where = f" (in member {plan.current!r})" if plan.current else ""
        raise BundleError(
            f"bundle {archive}: cannot extract the archive{where} ({one_line(exc)}); "
            "pass a bundle directory or a .tar.gz made by edgesmith, or copy it again"
        ) from None


class _Plan:
    """What the archive may hold, learnt from its manifest, and the checks against it."""

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive = archive
        self.dest_real = os.path.realpath(dest)
        self.current = ""  # the member being read, for messages
        self.manifest: Optional[Manifest] = None
        self.manifest_raw = b""
        self.sizes: Dict[str, int] = {}  # listed path -> size
        self.dirs: Set[str] = set()  # directories that hold a listed file
        self.bound = 0  # the most the archive may write: manifest.json plus every listed file

    def learn(self, raw: bytes) -> None:
        self.manifest = parse_manifest(raw, str(self.archive))
        self.manifest_raw = raw
        self.sizes = {f["path"]: f["size"] for f in self.manifest["files"]}
        for path in self.sizes:
            parent = posixpath.dirname(path)
            while parent:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.bound = len(raw) + sum(self.sizes.values())

    def refuse(self, member: tarfile.TarInfo, problem: str) -> BundleError:
        return BundleError(f"bundle {self.archive}: archive member {member.name!r} {problem}; {REFUSE}")

    def safe_name(self, member: tarfile.TarInfo) -> str:
        """The member's path relative to the bundle root ('' for the root itself), if it is safe to create."""
        problem = _member_problem(member, self.dest_real)
        if problem:
            raise self.refuse(member, problem)
        name = posixpath.normpath(member.name)
        return "" if name == "." else name

    def check_listed(self, member: tarfile.TarInfo, name: str, seen: Set[str], total: List[int]) -> None:
        """Once the manifest is known: the member is one it lists, at its size, once, within the bound."""
        if name in seen:
            raise self.refuse(member, "appears more than once")
        seen.add(name)
        if member.isdir():
            if name and name not in self.dirs:
                raise self.refuse(member, f"is a directory that holds no file listed in {MANIFEST_NAME} \"files\"")
            return
        if name == MANIFEST_NAME:
            expected = len(self.manifest_raw)
        elif name in self.sizes:
            expected = self.sizes[name]
        else:
            raise self.refuse(member, f"is not listed in {MANIFEST_NAME} \"files\" ({member.size} bytes)")
        if member.size != expected:
            raise BundleError(
                f"bundle {self.archive}: {name} size mismatch (manifest {expected} bytes, archive member "
                f"{member.size} bytes): the archive was modified or corrupted; {REFUSE}")
        total[0] += member.size
        if total[0] > self.bound:  # cannot happen with the checks above; the bound is the point, so check it
            raise self.refuse(member, f"takes the archive past the {self.bound} bytes its manifest lists")


def _scan(raw: IO[bytes], plan: _Plan) -> None:
    """Pass 1: every header and manifest.json's bytes; nothing is written."""
    held: List[tarfile.TarInfo] = []  # members seen before the manifest
    names: List[str] = []
    seen: Set[str] = set()
    total = [0]
    with tarfile.open(fileobj=raw, mode="r:*") as tar:
        while True:
            member = tar.next()
            if member is None:
                break
            plan.current = member.name
            name = plan.safe_name(member)
            names.append(name)
            if name == MANIFEST_NAME and member.isfile() and plan.manifest is None:
                if member.size > MAX_MANIFEST_BYTES:
                    raise plan.refuse(member, f"is {member.size} bytes, over the {MAX_MANIFEST_BYTES} a manifest may have")
                handle = tar.extractfile(member)
                data = handle.read(MAX_MANIFEST_BYTES + 1) if handle is not None else b""
                plan.learn(data)
                for earlier in held:
                    plan.check_listed(earlier, plan.safe_name(earlier), seen, total)
                held = []
            if plan.manifest is None:
                held.append(member)
                if len(held) > MAX_MEMBERS_BEFORE_MANIFEST:
                    raise plan.refuse(member, f"comes after {MAX_MEMBERS_BEFORE_MANIFEST} members without a {MANIFEST_NAME}")
            else:
                plan.check_listed(member, name, seen, total)
            tar.members = []  # headers are checked as they come: do not keep them all
    plan.current = ""
    if plan.manifest is None:
        nested = sorted(n for n in names if posixpath.basename(n) == MANIFEST_NAME and n.count("/") == 1)
        raise missing_manifest(str(plan.archive), nested, None)


def _write(raw: IO[bytes], plan: _Plan) -> None:
    """Pass 2: write what pass 1 allowed, checking every member again on the way."""
    seen: Set[str] = set()
    total = [0]
    dest = plan.dest_real
    with tarfile.open(fileobj=raw, mode="r:*") as tar:
        while True:
            member = tar.next()
            if member is None:
                break
            plan.current = member.name
            name = plan.safe_name(member)
            plan.check_listed(member, name, seen, total)
            if not name:
                continue
            target = os.path.join(dest, *name.split("/"))
            if member.isdir():
                os.makedirs(target, mode=0o755, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:  # pragma: no cover - only links and special files have no data, refused above
                raise plan.refuse(member, "has no data")
            # Permissions as the "data" filter sets them: no setuid/setgid/sticky, no group/world write.
            mode = 0o755 if member.mode & 0o100 else 0o644
            _copy(source, target, member.size, mode, plan, member)
            if name == MANIFEST_NAME:
                with open(target, "rb") as fh:
                    if fh.read() != plan.manifest_raw:  # what load_bundle verifies against is what was checked
                        raise plan.refuse(member, "changed while the archive was being extracted")
            tar.members = []
    plan.current = ""


def _copy(source: IO[bytes], target: str, limit: int, mode: int, plan: _Plan, member: tarfile.TarInfo) -> None:
    written = 0
    with open(target, "xb") as out:  # "x": never through a file (or link) that is already there
        while True:
            block = source.read(min(CHUNK, limit - written + 1))
            if not block:
                break
            written += len(block)
            if written > limit:
                raise plan.refuse(member, f"holds more than the {limit} bytes its header and the manifest declare")
            out.write(block)
    if written != limit:
        raise plan.refuse(member, f"ends after {written} of the {limit} bytes its header declares")
    os.chmod(target, mode)


def _empty(dest: Path) -> None:
    """Remove what an extraction wrote: `dest` was empty before it."""
    try:
        children = list(Path(dest).iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            try:
                child.unlink()
            except OSError:
                pass


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
    if member.issparse():
        return "is a sparse file"
    target = os.path.realpath(os.path.join(dest_real, name))
    if target != dest_real and not target.startswith(dest_real + os.sep):
        return "would be extracted outside the destination directory"
    return ""


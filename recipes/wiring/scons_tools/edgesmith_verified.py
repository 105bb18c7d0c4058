"""Verify before use: stage outputs and cache entries are checked against the checksums recorded when built.

Two places can hand a stage a file that is not what was built:

- **the build directory.** SCons never rebuilds a target whose own bytes
  changed (it only looks at its sources), so a flipped bit in a fine-tuned
  teacher would flow, as a "changed source", into every artifact and ship.
  Each finished stage records the size, mtime and sha256 of its outputs in its
  stamp (build/.stamps); while the build files are read, `check_outputs`
  compares every declared stage's outputs with it (a stat; the hash only when
  size or mtime moved) and removes the outputs of a stage whose bytes changed,
  with one line, so SCons rebuilds that stage from its sources in this run.
- **a shared cache (`cache=DIR`).** SCons keys cache entries by build
  signature and copies them back unchecked. `VerifiedCacheDir` writes the
  sha256 of each entry beside it when pushing, and before retrieving checks
  the entry against it: a corrupt or unverifiable entry is evicted (when the
  cache is writable), reported in one line and rebuilt, never used. A cache
  that cannot be written (read-only filesystem, no permission) is a one-line
  warning, and the build reads from it without writing.

Standard library, SCons and runtime.integrity only: this runs inside SCons.
"""
from __future__ import annotations

import json
import os
import sys

import SCons.CacheDir
import SCons.Errors

# SConstruct puts the repository on sys.path before the tools load; the runtime's hasher is the one the bundle verifies with.
from runtime.integrity import sha256_file

def warn(message: str) -> None:
    # One write per line: actions run in threads, and print() writes the text and its newline separately.
    sys.stderr.write(f"edgesmith: warning: {message}\n")


# -- build outputs ---------------------------------------------------------------

def outputs_record(paths: list[str]) -> dict[str, list] | None:
    """{path: [size, mtime_ns, sha256]} of a finished stage's outputs (None if one is missing)."""
    record = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return None
        record[path] = [st.st_size, st.st_mtime_ns, sha256_file(path)]
    return record


def changed_outputs(recorded: dict[str, list], root: str) -> list[str]:
    """Outputs whose bytes differ from the record (a missing one is not "changed": SCons rebuilds it)."""
    changed = []
    for rel, entry in recorded.items():
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if len(entry) < 3:
            continue  # a stamp from before checksums were recorded: nothing to compare with
        size, mtime, digest = entry[:3]
        if st.st_size == size and st.st_mtime_ns == mtime:
            continue  # untouched since the stage wrote it
        if st.st_size != size or sha256_file(path) != digest:
            changed.append(rel)
    return changed


def check_outputs(stage: str, stamp: str, root: str, targets: list[str]) -> None:
    """Remove `targets` (and the stamp) when any of them differs from what `stage` recorded; say so in one line."""
    try:
        with open(stamp, encoding="utf-8") as fh:
            recorded = json.load(fh).get("outputs") or {}
    except (OSError, ValueError):
        return
    changed = changed_outputs(recorded, root)
    if not changed:
        return
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    warn(f"{changed[0]}{more}: changed since the {stage} stage wrote it (sha256 differs from its record); "
         "removed, and the stage is rebuilt")
    for path in [stamp] + [os.path.join(root, t) for t in targets]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# -- the shared cache ------------------------------------------------------------

def _sidecar(cachefile: str) -> str:
    return cachefile + ".sha256"


class VerifiedCacheDir(SCons.CacheDir.CacheDir):
    """SCons' CacheDir, with a sha256 beside every entry, checked before the entry is used."""

    _warned_unwritable = False

    def __init__(self, path) -> None:
        try:
            super().__init__(path)
        except (OSError, SCons.Errors.SConsEnvironmentError) as e:
            # SCons creates DIR/config on first use; on a read-only or impossible path that fails.
            # Keep reading whatever entries are there, and write none.
            self.requests = self.hits = 0
            self.path = path
            self.current_cache_debug = None
            self.debugFP = None
            self.config = {"prefix_len": SCons.CacheDir.CACHE_PREFIX_LEN}
            self.writable = False
            self._unwritable(getattr(e, "strerror", None) or str(e))
            return
        self.writable = path is not None and os.path.isdir(path) and os.access(path, os.W_OK)
        if path is not None and not self.writable:
            self._unwritable("no write permission")

    def _unwritable(self, why: str) -> None:
        if self.is_readonly() or VerifiedCacheDir._warned_unwritable:
            return
        VerifiedCacheDir._warned_unwritable = True
        warn(f"cache={self.path}: cannot write to it ({why}); using the entries it has without adding any "
             "(pass --cache-readonly to say that is intended)")

    @classmethod
    def copy_to_cache(cls, env, src, dst) -> str:
        # dst is a temporary file that SCons renames to DIR/XX/<bsig> afterwards;
        # the checksum goes straight to its final place, written first.
        final = os.path.join(os.path.dirname(os.path.dirname(dst)), os.path.basename(dst))
        tmp = f"{_sidecar(final)}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(sha256_file(src) + "\n")
        os.replace(tmp, _sidecar(final))
        return super().copy_to_cache(env, src, dst)

    def push(self, node):
        if not getattr(self, "writable", False):
            return None
        return super().push(node)

    def retrieve(self, node) -> bool:
        if not self.is_enabled():
            return False
        _, cachefile = self.cachepath(node)
        if cachefile and os.path.isfile(cachefile) and not self._entry_is_intact(cachefile, node):
            return False  # SCons builds the node instead
        return super().retrieve(node)

    def _entry_is_intact(self, cachefile: str, node) -> bool:
        try:
            with open(_sidecar(cachefile), encoding="ascii") as fh:
                expected = fh.read().strip()
        except OSError:
            expected = ""
        if expected and sha256_file(cachefile) == expected:
            return True
        why = "its sha256 differs from the one recorded when it was cached" if expected else "it has no recorded sha256"
        evicted = False
        if self.writable:
            for path in (cachefile, _sidecar(cachefile)):
                try:
                    os.unlink(path)
                    evicted = True
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
        warn(f"cache entry {cachefile} for {node.get_internal_path()} is not used: {why}; "
             f"{'evicted, and ' if evicted else ''}the target is rebuilt")
        return False

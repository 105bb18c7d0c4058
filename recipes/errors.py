"""The one exception tree for edgesmith.

Messages are a single line that says what is wrong, where (file, key, value)
and how to fix it. Library code raises; only entry points (SConstruct, the
SCons action wrapper, CLIs) turn these into exit codes.
"""
from __future__ import annotations


class EdgesmithError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""


class ConfigError(EdgesmithError):
    """A command-line variable or a target name is wrong."""


class ProfileError(ConfigError):
    """A device profile (targets/*.toml) is malformed or inconsistent."""


class ModelError(EdgesmithError):
    """The model checkpoint directory is missing, incomplete or unsupported."""


class DataError(EdgesmithError):
    """The dataset is missing, empty, or lacks the expected columns/labels."""


class StageError(EdgesmithError):
    """A build stage produced something that failed its own verification."""


class GateError(EdgesmithError):
    """A quality gate from the profile failed (message shows value and limit)."""

"""Errors the `streamfill` command reports as one line and exit status 2.

    EdgeError            a problem at the edge: the operator fixes a setting or a server
     ├── SettingError    a value, or a combination of values, that is not allowed
     └── ServerError     a server that cannot be used: unreachable, refused the credentials,
                         too old, or without the database named in the URL

Everything else is a bug or a transient failure inside a worker and keeps its traceback.
"""

from __future__ import annotations


class EdgeError(Exception):
    """One line for the operator (the message names what to check); exit status 2."""


class SettingError(EdgeError):
    """A setting's value, or a combination of settings, is not allowed."""


class ServerError(EdgeError):
    """A server named in the settings cannot be used."""


__all__ = ["EdgeError", "ServerError", "SettingError"]

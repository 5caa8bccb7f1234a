"""crashd's outside: the REST API, the WebSocket feed, authentication, limits and CLI."""

from importlib.metadata import version as _version

__version__ = _version("crashd")
"""The installed distribution's version (pyproject.toml is its one home)."""

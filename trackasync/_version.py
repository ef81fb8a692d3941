"""The installed distribution's version, read from its metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("trackasync")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"

"""The public surface: complete, sorted, and nothing private leaks out."""

from __future__ import annotations

import inspect

import trackasync
import trackasync.testing


def public_names(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name != "annotations"
    }


def test_all_lists_every_public_name() -> None:
    """trackasync.__all__ names exactly what the package exports."""
    assert set(trackasync.__all__) == public_names(trackasync) | {"__version__"}


def test_all_is_sorted() -> None:
    """__all__ is sorted case-insensitively, so a new name has one obvious place."""
    names = [n for n in trackasync.__all__ if n != "__version__"]
    assert names == sorted(names, key=str.lower)


def test_testing_all_lists_every_public_name() -> None:
    """trackasync.testing.__all__ is complete and sorted too."""
    exported = list(trackasync.testing.__all__)
    assert set(exported) == public_names(trackasync.testing) - {"pytest_plugin"}
    assert exported == sorted(exported, key=str.lower)


def test_exceptions_share_one_root() -> None:
    """Every exception the package exports derives from TrackError."""
    errors = [
        value
        for value in vars(trackasync).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(errors) >= 15
    assert all(issubclass(error, trackasync.TrackError) for error in errors)
    assert issubclass(trackasync.PayloadTooLarge, trackasync.InvalidEvent)
    assert issubclass(trackasync.InvalidEvent, ValueError)
    assert issubclass(trackasync.RequestTimeout, trackasync.TransportError)


def test_version_is_a_string() -> None:
    """__version__ comes from the installed metadata."""
    assert trackasync.__version__.count(".") >= 2

"""trackasync._fork: the after-fork hook the clients register with."""

from __future__ import annotations

import gc
import os

import pytest

from trackasync import _fork

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Recorder:
    def __init__(self, path: str, fail: bool = False) -> None:
        self.path = path
        self.fail = fail

    def _after_fork_in_child(self) -> None:
        with open(self.path, "a") as out:
            out.write(f"{os.getpid()}\n")
        if self.fail:
            raise RuntimeError("hook bug")


def _fork_and_wait() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return pid


def test_hooks_run_in_the_child_only_and_survive_a_failing_one(tmp_path) -> None:
    path = str(tmp_path / "calls")
    # Every hook fails: whatever order the weak set gives them, a failure that
    # stopped the others would leave fewer than three calls.
    first, failing, last = (Recorder(path, fail=True) for _ in range(3))
    for obj in (first, failing, last):
        _fork.register(obj)
    try:
        child = _fork_and_wait()
        with open(path) as calls:
            assert calls.read().split() == [str(child)] * 3
    finally:
        for obj in (first, failing, last):
            _fork.unregister(obj)
    _fork_and_wait()  # unregistered: nothing more is called
    with open(path) as calls:
        assert len(calls.read().split()) == 3


def test_registering_keeps_nothing_alive(tmp_path) -> None:
    path = str(tmp_path / "calls")
    _fork.register(Recorder(path))
    gc.collect()
    _fork_and_wait()
    assert not os.path.exists(path)

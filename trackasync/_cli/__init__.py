"""The ``trackasync`` command: ``send``, ``demo``, ``spool`` and ``fake-server``."""

from __future__ import annotations

import sys

_USAGE = """usage: trackasync {send,demo,spool,fake-server} [options]

  send         send a JSON Lines file of events and customer updates
  demo         send events through the real client to a fake Tracking API
               that injects faults, and check what it stored
  spool        show what a spool directory holds; --drain sends it now
  fake-server  serve the fake Tracking API on a port, for demos and for
               tests of an app in another process (GET /_fake/state
               returns what it stored)

Run 'trackasync COMMAND --help' for a command's options.
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; imports are deferred so ``--help`` is quick."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "send":
        from .send import send

        return send(rest)
    if command == "demo":
        from .demo import main as demo

        return demo(rest)
    if command == "spool":
        from .spool import main as spool

        return spool(rest)
    if command == "fake-server":
        from ..testing._fake_serve import serve

        return serve(rest)
    sys.stderr.write(f"trackasync: unknown command {command!r}\n\n{_USAGE}")
    return 2

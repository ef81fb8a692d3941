"""Flask (or any WSGI app, Django views alike): one SyncClient per process.

    flask --app examples.flask_app run      # settings from TRACKASYNC_* variables

``track`` validates in the view's thread and returns without waiting for the
network. The client's thread starts on first use, so it is also right under
gunicorn ``--preload`` or uWSGI: a forked worker starts its own. It is closed
at interpreter exit, delivering what is queued within its shutdown_timeout.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from trackasync import InvalidEvent, SyncClient


def create_app() -> Flask:
    app = Flask(__name__)
    client = SyncClient.from_env()
    app.extensions["trackasync"] = client

    @app.post("/signup")
    def signup() -> ResponseReturnValue:
        data = request.get_json(force=True)
        try:
            client.track(
                {"registered": data["email"]}, "signup", {"plan": data.get("plan")}
            )
        except InvalidEvent as exc:
            return jsonify(status="invalid", detail=str(exc)), 400
        return jsonify(status="queued"), 202

    return app

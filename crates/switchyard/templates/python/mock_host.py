"""A mock host for a Switchyard plugin's unit tests, in plain Python.

The plugin imports the host's functions from the bindings componentize-py
generates (`wit_world.imports`); outside a component they do nothing. The
mock puts its own in their place while installed (`with host:`): canned
HTTP responses by method and URL, config values, captured log lines, the
requests the plugin made, and the `shared` lock and remembered values.

    host = MockHost().config("base_url", "https://x.example").on("GET", "https://x.example/users*", 200, {"Resources": []})
    with host:
        ...call the plugin's classes...
    assert host.requests[0].method == "GET"

A URL ending in `*` matches every URL that starts with the rest. Several
responses for one route are served in order, the last one repeating. A
request no route matches fails as the host's transport error would.
"""

import json

from componentize_py_types import Err
from wit_world.imports import config, http, log, shared


class MockHost:
    def __init__(self):
        self.settings = {}
        self.routes = []
        self.requests = []
        self.logs = []
        self.remembered = {}
        self.locked = []
        self.held = []
        self._saved = None

    def config(self, key, value):
        self.settings[key] = value
        return self

    def on(self, method, url, status=200, body=None, headers=()):
        """Answer `method url` with `status` and `body` (JSON unless bytes)."""
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body).encode()
        response = http.Response(status, [(k.lower(), v) for k, v in headers], payload)
        for route in self.routes:
            if route["method"] == method.upper() and route["url"] == url:
                route["responses"].append(response)
                return self
        self.routes.append({"method": method.upper(), "url": url, "responses": [response], "served": 0})
        return self

    def _send(self, request):
        self.requests.append(request)
        for route in self.routes:
            url = route["url"]
            matches = request.url.startswith(url[:-1]) if url.endswith("*") else request.url == url
            if route["method"] == request.method.upper() and matches:
                at = min(route["served"], len(route["responses"]) - 1)
                route["served"] += 1
                return route["responses"][at]
        raise Err(f"mock host: no response for {request.method} {request.url}")

    def _lock(self, key):
        self.locked.append(key)
        if key not in self.held:
            self.held.append(key)

    def _unlock(self, key):
        if key in self.held:
            self.held.remove(key)

    def __enter__(self):
        self._saved = (config.get, http.send, log.log, shared.lock, shared.unlock, shared.recall, shared.remember)
        config.get = self.settings.get
        http.send = self._send
        log.log = lambda level, message: self.logs.append((level, message))
        shared.lock = self._lock
        shared.unlock = self._unlock
        shared.recall = self.remembered.get
        shared.remember = self.remembered.__setitem__
        return self

    def __exit__(self, *exc):
        (config.get, http.send, log.log, shared.lock, shared.unlock, shared.recall, shared.remember) = self._saved
        return False

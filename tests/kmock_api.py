"""kmock serving the Kubernetes API over real HTTP from a background event loop, shared by the Kubernetes tests.

The platform's blocking `kubernetes` client talks to it like to an API server; tests mutate the stored
objects through `run`, on the server's loop, so a mutation never races a request being served.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import kmock
from kubernetes import client as k8s


class SelectorEmulator(kmock.KubernetesEmulator):
    """The emulator, plus what nightcap relies on from an API server: equality label selectors on lists,
    `dryRun=All` (judged, never stored; a namespace outside `namespaces` is not found; a Pod that `admission(pod)`
    refuses gets its message in a 403, as admission answers), and
    SelfSubjectAccessReviews answered from `denied` ((group, resource[/sub], verb) the identity may not do)."""

    denied: set[tuple[str, str, str]]
    namespaces: set[str] | None

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        resource = request.resource
        if str(request.url.path).rstrip("/") == "/version":  # the client asks for /version/
            return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kmock"})
        if resource is not None and resource.plural == "selfsubjectaccessreviews":
            attrs = ((request.data or {}).get("spec") or {}).get("resourceAttributes") or {}
            what = attrs.get("resource", "") + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
            allowed = (attrs.get("group", ""), what, attrs.get("verb", "")) not in getattr(self, "denied", set())
            return web.json_response({**request.data, "status": {"allowed": allowed}}, status=201)
        if request.params.get("dryRun") == "All" and resource is not None:
            namespace = request.namespace or ((request.data or {}).get("metadata") or {}).get("namespace")
            known = getattr(self, "namespaces", None)
            if known is not None and namespace not in known:
                return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                          "reason": "NotFound", "message": f'namespaces "{namespace}" not found',
                                          "details": {"name": namespace, "kind": "namespaces"}}, status=404)
            judge = getattr(self, "admission", None)
            refusal = judge(request.data) if judge is not None and resource.plural == "pods" else None
            if refusal:  # as the API server answers an admission denial (PodSecurity, ResourceQuota, LimitRange)
                return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                          "reason": "Forbidden", "message": refusal,
                                          "details": {"name": request.data["metadata"]["name"], "kind": "pods"}},
                                         status=403)
            return web.json_response(request.data, status=201)
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.split(","))
            result["items"] = [o for o in result["items"]
                               if all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v
                                      for k, v in wanted.items())]
        return result


class KmockApi:
    """The emulator and its HTTP server on their own loop, with `resources` declared, and a client for them."""

    def __init__(self, resources: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[Any, Any]:
            handler = SelectorEmulator()
            await handler.__aenter__()
            server = kmock.Server(handler)
            await server.__aenter__()
            return handler, server

        self.kmock, self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        for res in resources:
            self.kmock.resources[res] = {}
        self.api = k8s.ApiClient(k8s.Configuration(host=str(self.server.url).rstrip("/")))

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop and return its result."""
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)

    def close(self) -> None:
        async def stop() -> None:
            await self.server.__aexit__(None, None, None)
            await self.kmock.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.api.close()


def rbac_access(method: str, path: str) -> tuple[str, str, str]:
    """(API group, resource[/subresource], RBAC verb) of one API request, as the authorizer sees it."""
    parts = [p for p in path.split("/") if p]
    if parts[0] not in ("api", "apis"):
        return "", "/" + "/".join(parts), "get"  # a non-resource URL (/version): RBAC nonResourceURLs
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    method = method.upper()
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(method)
    if verb is None:
        verb = ("get" if name else "list") if method == "GET" else ("delete" if name else "deletecollection")
    return group, f"{resource}/{sub}" if sub else resource, verb


def requests_outside_rbac(api: KmockApi) -> list[tuple[str, str, str]]:
    """Every request kmock saw that nightcap's RBAC table (nightcap/kube/rbac.py) does not grant."""
    from nightcap.kube.rbac import allowed

    seen = {rbac_access(str(r.method.value), str(r.url.path)) for r in api.run(lambda: list(api.kmock))}
    # every authenticated identity may ask what it may do, and read /version (system:basic-user,
    # system:public-info-viewer)
    everyone = {("authorization.k8s.io", "selfsubjectaccessreviews", "create"), ("", "/version", "get")}
    return sorted(a for a in seen - everyone if not allowed(*a))


class FakeMaster:
    """A Locust master's web API on 127.0.0.1, counting as connected the workers `connected()` names.

    Stands in for the master pod behind the port-forward (`open_socket`) or for its client (`client()`);
    `swarms` records every POST /swarm, `polls` every window read."""

    def __init__(self, connected: Callable[[], list[str]]) -> None:
        import http.server
        import json
        from urllib.parse import parse_qs

        self.connected = connected
        self.swarms: list[dict[str, str]] = []
        self.polls = 0
        master = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # /nightcap/window
                master.polls += 1
                ids = list(master.connected())
                self._send({"active_workers": ids, "worker_count": len(ids), "user_count": 0, "state": "ready",
                            "workers": {i: {"requests": 0, "failures": 0, "covered_s": 1.0, "cpu_s": 0.3}
                                        for i in ids}, "total": {}, "errors": []})

            def do_POST(self) -> None:  # /swarm, /stats/reset, /stop
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                if self.path == "/swarm":
                    master.swarms.append({k: v[0] for k, v in form.items()})
                self._send({"success": True})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def open_socket(self, *_: Any) -> Any:
        import socket

        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def client(self) -> Any:
        from nightcap.load.driver import MasterClient

        return MasterClient(f"http://127.0.0.1:{self.port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

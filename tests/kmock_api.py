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
    """The emulator, plus equality label selectors on lists (as the API server applies them)."""

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
    """Every request kmock saw that nightcap's RBAC table (nightcap/platforms/rbac.py) does not grant."""
    from nightcap.platforms.rbac import allowed

    seen = {rbac_access(str(r.method.value), str(r.url.path)) for r in api.run(lambda: list(api.kmock))}
    return sorted(a for a in seen if not allowed(*a))

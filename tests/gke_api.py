"""A local fake of the three GKE endpoints nightcap uses, served over HTTP to the real ClusterManagerClient's REST
transport (shared by the GKE, preflight and Kubernetes flow tests)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from google.cloud.container_v1.services.cluster_manager.transports.rest import ClusterManagerRestTransport

POOL = "projects/p1/locations/europe-west4/clusters/c1/nodePools/pool-a"
OPS = "projects/p1/locations/europe-west4/operations"


def _enum_names(autoscaling: dict[str, Any]) -> dict[str, Any]:
    """The REST transport sends enums as integers (GKE accepts both); store them by name like GKE shows them."""
    out = dict(autoscaling)
    if isinstance(out.get("locationPolicy"), int):
        out["locationPolicy"] = container_v1.NodePoolAutoscaling.LocationPolicy(out["locationPolicy"]).name
    return out


class FakeGke:
    """The GKE endpoints used (node pool, cluster, operations), Resource Manager's testIamPermissions and Compute's
    instance-group resize, with scripted answers; every request is recorded."""

    def __init__(self) -> None:
        self.autoscaling: dict[str, Any] = {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3,
                                            "locationPolicy": "BALANCED"}
        self.locations = ["europe-west4-a"]
        self.node_count = 3  # per zone, as `set_node_pool_size` takes it
        self.requests: list[tuple[str, str, Any]] = []
        self.set_errors: list[tuple[int, str, str]] = []  # (http status, grpc status, message) answered first
        self.polls_until_done = 2
        self.fail_operation = False
        self._ops: dict[str, int] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.pool, self.ops = POOL, OPS
        self.cluster: dict[str, Any] = {"name": "c1", "networkConfig": {"datapathProvider": "ADVANCED_DATAPATH"},
                                        "workloadIdentityConfig": {"workloadPool": "p1.svc.id.goog"}}
        self.granted = {"container.clusters.update", "container.operations.get", "compute.instanceGroupManagers.update"}
        self.groups: dict[str, int] | None = None  # zone -> size, when the test sets sizes per zone
        self.base_url = ""

    def group_url(self, zone: str) -> str:
        project = self.pool.split("/")[1]
        return f"{self.base_url}/compute/v1/projects/{project}/zones/{zone}/instanceGroupManagers/gke-pool-{zone}-grp"

    def handle(self, method: str, path: str, body: Any, query: str = "") -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path, body))
            if method == "GET" and path == f"/v1/{self.pool}":
                return 200, {"name": "pool-a", "initialNodeCount": 2, "autoscaling": self.autoscaling,
                             "locations": self.locations,
                             "instanceGroupUrls": [self.group_url(z) for z in self.locations]}
            if method == "GET" and path == f"/v1/{self.pool.split('/nodePools/')[0]}":
                return 200, self.cluster
            if method == "POST" and path.endswith(":testIamPermissions"):
                return 200, {"permissions": [p for p in body["permissions"] if p in self.granted]}
            resize = re.fullmatch(r"/compute/v1/projects/[^/]+/zones/([^/]+)/instanceGroupManagers/[^/]+/resize", path)
            if method == "POST" and resize:
                size = int(query.split("size=")[1].split("&")[0])
                self.groups = {**(self.groups or {}), resize.group(1): size}
                return 200, {"name": f"resize-{resize.group(1)}", "status": "DONE",
                             "selfLink": f"{self.base_url}/compute/v1/done"}
            if method == "POST" and path == f"/v1/{self.pool}:setSize":
                op = f"operation-{len(self._ops) + 1}"
                self._ops[op] = 0
                self._pending[op] = {"nodeCount": body["nodeCount"]}
                return 200, {"name": op, "status": "RUNNING", "operationType": "SET_NODE_POOL_SIZE"}
            if method == "POST" and path == f"/v1/{self.pool}:setAutoscaling":
                if self.set_errors:
                    code, status, message = self.set_errors.pop(0)
                    return code, {"error": {"code": code, "status": status, "message": message}}
                op = f"operation-{len(self._ops) + 1}"
                self._ops[op] = 0
                self._pending[op] = body["autoscaling"]
                return 200, {"name": op, "status": "RUNNING", "operationType": "SET_NODE_POOL_SIZE"}
            match = re.fullmatch(rf"/v1/{self.ops}/(operation-\d+)", path)
            if method == "GET" and match:
                op = match.group(1)
                self._ops[op] += 1
                if self._ops[op] < self.polls_until_done:
                    return 200, {"name": op, "status": "RUNNING"}
                if self.fail_operation:
                    return 200, {"name": op, "status": "DONE", "error": {"code": 9, "message": "quota exceeded"}}
                if op in self._pending:
                    change = self._pending.pop(op)
                    if "nodeCount" in change:
                        self.node_count = change["nodeCount"]
                        if self.groups is not None:
                            self.groups = {z: change["nodeCount"] for z in self.groups}
                    else:
                        self.autoscaling = _enum_names(change)
                return 200, {"name": op, "status": "DONE"}
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": f"no {path}"}}


def serve(state: FakeGke, pool: str = POOL, ops: str = OPS) -> tuple[container_v1.ClusterManagerClient, Any]:
    """Serve `state` on 127.0.0.1; return a real client talking to it, and a function that stops the server."""
    state.pool, state.ops = pool, ops

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path, _, query = self.path.partition("?")
            code, payload = state.handle(self.command, path, body, query)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    transport = ClusterManagerRestTransport(host=f"127.0.0.1:{server.server_port}", credentials=AnonymousCredentials(),
                                            url_scheme="http")

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return container_v1.ClusterManagerClient(transport=transport), stop

"""A local port whose connections are piped to a pod through the API server (pods/portforward).

What `kubectl port-forward` does, in-process: the flow reaches the model and the Locust master from outside
the cluster without a Service of type LoadBalancer. The tunnel arrives on the pod's loopback.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from typing import Callable

from kubernetes import client as k8s

log = logging.getLogger(__name__)


class PortForward:
    """127.0.0.1:<free port> whose every connection is piped to a socket from `open_remote`.

    `open_remote` is called per connection, so a connection opened after a scale-up may reach a new pod
    (as behind a Service). The default opener tunnels through the API server (pods/portforward).

    At most `max_tunnels` connections are piped at once; the next waits in the listen backlog until one closes.
    A generator that re-opens connections under an overload (one per request in flight) otherwise made a thread
    and an API-server tunnel per connection faster than they closed: 10,000 threads and a test that never ended.
    """

    def __init__(self, open_remote: Callable[[], socket.socket], what: str = "port-forward", max_tunnels: int = 64):
        self._open_remote = open_remote
        self.what = what
        self._slots = threading.BoundedSemaphore(max_tunnels)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"nightcap {what}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            while not self._slots.acquire(timeout=0.5):  # every tunnel busy: leave the next one in the backlog
                if self._closed.is_set():
                    return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                self._slots.release()
                return
            threading.Thread(target=self._serve_one, args=(conn,), name=f"nightcap {self.what} tunnel",
                             daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        finally:
            self._slots.release()

    def _serve(self, conn: socket.socket) -> None:
        try:
            remote = self._open_remote()
        except Exception as exc:  # the pod went away, RBAC: close this connection, keep listening
            log.warning("%s: cannot open the remote side: %s", self.what, exc)
            conn.close()
            return
        with self._lock:
            self._conns.update((conn, remote))
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, remote)
        sel.register(remote, selectors.EVENT_READ, conn)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (conn, remote):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.difference_update((conn, remote))

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for s in list(self._conns):
                try:
                    s.close()
                except OSError:
                    pass


def open_pod_socket(api: k8s.ApiClient, namespace: str, pod: str, port: int) -> socket.socket:
    """A socket to `pod:port` tunnelled through the API server (needs `create` on pods/portforward).

    A separate ApiClient is used: `kubernetes.stream` swaps `call_api` on the client while it connects,
    which must not race with ordinary calls made by other threads.
    """
    from kubernetes.stream import portforward

    tunnel_api = k8s.CoreV1Api(k8s.ApiClient(configuration=api.configuration))
    forward = portforward(tunnel_api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    sock = forward.socket(port)
    sock.setblocking(True)
    return sock

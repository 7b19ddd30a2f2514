"""Raw Locust for the generator benchmark: the same FastHttpUser request nightcap's locustfile sends
(POST, JSON body, Content-Type header, closed loop), with none of nightcap's additions (no report stamps,
no /nightcap/window, no pacing option, no reconnects, default report interval)."""

from locust import FastHttpUser, task

BODY = b'{"inputs": [[1.0, 2.0, 3.0]]}'
HEADERS = {"Content-Type": "application/json"}


class RawUser(FastHttpUser):
    @task
    def predict(self) -> None:
        self.client.request("POST", "/invocations", data=BODY, headers=HEADERS, name="/invocations")

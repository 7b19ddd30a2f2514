"""The platform canary as a target: the model's config with the canary in its place (`canary:` settings).

The canary is the reference server doing `canary.work_kb` KiB of hashing per request (fixed work), on one pod
of `canary.cpu` / `canary.memory` with `canary.slots` slots, on the model's own platform (same kind, namespace,
node pool, CPU pinning), so it meets the machine the model will meet. Locally it is started like any reference
target. On Kubernetes it needs no image of ours: the server is standard-library Python, so `canary.image` (any
Python >= 3.9 image, `python:3.12-slim` by default) runs its source with `python -c` (`server_program`).
"""

from __future__ import annotations

from pathlib import Path

from nightcap.analysis.canary import CanarySettings
from nightcap.config import Config

SERVER = Path(__file__).with_name("reference_server.py")
# what the server imports, by the name it imports it by, with its source
SERVER_MODULES = {"nightcap.targets.reference_http": Path(__file__).with_name("reference_http.py")}

_PROGRAM = """\
import sys, types
def _module(name, source=None):
    module = types.ModuleType(name)
    if source is None:
        module.__path__ = []
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    if source is not None:
        exec(compile(source, name.replace(".", "/") + ".py", "exec"), module.__dict__)
{modules}del _module
exec(compile({server!r}, "nightcap/targets/reference_server.py", "exec"), globals())
"""


def server_program() -> str:
    """The reference server as one `python -c` program, for a Python with no nightcap installed (the canary's pod).

    The server imports its HTTP/1.1 absolutely (`from nightcap.targets.reference_http import ...`), the same under
    `python -m` and here. The program first makes that module from its source, under that name in `sys.modules`,
    below empty `nightcap` and `nightcap.targets` package stubs (the import system finds all three there and
    searches nowhere), then runs the server's source in `__main__`'s namespace, so its `if __name__ == "__main__"`
    starts it with the program's argv. The sources are string literals, compiled in the pod; the program adds
    only `sys`, `types` and the three modules. No `{port}` appears in it, so filling the argv leaves it intact.
    """
    stubs = {".".join(name.split(".")[:i]) for name in SERVER_MODULES for i in range(1, name.count(".") + 1)}
    lines = [f"_module({name!r})\n" for name in sorted(stubs)]
    lines += [f"_module({name!r}, {path.read_text()!r})\n" for name, path in SERVER_MODULES.items()]
    return _PROGRAM.format(modules="".join(lines), server=SERVER.read_text())


def canary_settings(config: Config) -> CanarySettings:
    c = config.canary
    return CanarySettings(work_kb=c.work_kb, cpu=float(c.cpu), slots=c.slots, users=c.users)


def canary_wanted(config: Config) -> tuple[bool, str]:
    """Whether tonight measures the canary, and why not: it serves the regression stage's verdict."""
    if not config.canary.enabled:
        return False, "canary.enabled is false"
    if "regression" not in config.stages:
        return False, "the regression stage, which uses it, is not in stages"
    return True, ""


def canary_config(config: Config) -> Config:
    """The run's config with the canary as its target, on one pod of the canary's size."""
    c = config.canary
    data = config.model_dump()
    target = {"name": f"{config.target.name}-canary"[:120], "path": config.target.path, "ready_path": "/ping",
              "method": config.target.method, "startup_timeout_s": config.target.startup_timeout_s}
    argv = ["--port", "{port}", "--slots", "{concurrency}", "--service-ms", "0", "--queue", str(4 * c.slots),
            "--work-kb", str(c.work_kb)]
    if config.platform.kind == "kubernetes":
        # the server's own sources, run by a stock Python image: nothing to build or push
        target.update(kind="command", image=c.image,
                      command=["python", "-c", server_program(), "--host", "0.0.0.0", *argv])
    else:
        target.update(kind="reference", slots=c.slots, service_ms=0.0, queue=4 * c.slots, work_kb=c.work_kb)
    data["target"] = target
    data["platform"].update(replicas=1, cpu=c.cpu, memory=c.memory, concurrency=c.slots)
    data["stages"] = ["single_client"]
    return Config.model_validate(data)

"""Start TorchServe for one verified model archive: `python -m model_server.serve`.

The same entry point runs a Cloud Run revision's container and an embedded revision's
process. It reads its settings from the environment:

- `CTFLOW_ARCHIVE` (a local path: in the container, the read-only Cloud Storage volume)
  and `CTFLOW_ARCHIVE_SHA256`: the archive is refused, and nothing starts, unless its
  bytes hash to exactly that (an archive is a revision's identity, and a .mar runs code);
- `PORT` (Cloud Run sets it) and `CTFLOW_SERVE_HOST` (default 0.0.0.0 in a container;
  the embedded mode passes loopback): where the inference API listens, the only thing
  exposed;
- `CTFLOW_SERVE_DIR`: where TorchServe's config, model store and logs go (a temp dir).

TorchServe's management and metrics APIs listen on 127.0.0.1 ephemeral ports (never
outside the container or process; ShellTorch, CVE-2023-43654), the model API is off
(nothing can be registered at run time), no per-model pip installs, one worker.

Standard library only: it runs before TorchServe, in its image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


class RefusedArchive(Exception):
    """The archive is missing or its bytes are not the ones the deployer recorded."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(archive: Path, expected_sha256: str) -> None:
    if not archive.is_file():
        raise RefusedArchive(f"no model archive at {archive}")
    actual = sha256_of(archive)
    if actual != expected_sha256.lower():
        raise RefusedArchive(f"model archive {archive} has sha256 {actual}, not the recorded {expected_sha256}")


def free_loopback_port() -> int:
    # ctflow.listening has the same three lines; this file runs in the model-server image, which carries
    # model_server/ only (no ctflow), so it keeps its own.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_properties(*, host: str, port: int, model_store: Path, model_name: str, tmp: Path, workers: int = 1) -> str:
    netloc = f"[{host}]" if ":" in host else host
    lines = {
        "inference_address": f"http://{netloc}:{port}",
        "management_address": f"http://127.0.0.1:{free_loopback_port()}",
        "metrics_address": f"http://127.0.0.1:{free_loopback_port()}",
        "model_store": str(model_store),
        "load_models": f"{model_name}=model.mar",
        "grpc_inference_port": str(free_loopback_port()),  # gRPC too: loopback, and no fixed port to collide on
        "grpc_management_port": str(free_loopback_port()),
        "default_workers_per_model": str(workers),
        "enable_model_api": "false",
        "install_py_dep_per_model": "false",
        "disable_token_authorization": "true",
        "allowed_urls": "^$",  # nothing to fetch models from, even if the model API were on
        "max_request_size": str(2 * 1024 * 1024),
        "max_response_size": str(2 * 1024 * 1024),
        "job_queue_size": "100",
        "default_response_timeout": "30",
        "async_logging": "true",
        "metrics_mode": "prometheus",
        "enable_envvars_config": "false",
        # Workers talk to the frontend over Unix sockets named after their port in java.io.tmpdir: a port
        # and a temp folder of this server's own, so servers side by side (embedded) never share one.
        "initial_worker_port": str(free_loopback_port()),
        "vmargs": f"-Xmx512m -XX:+UseContainerSupport -XX:+ExitOnOutOfMemoryError -Djava.io.tmpdir={tmp}",
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def prepare(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Verify the archive, write TorchServe's config; the argv and environment that start it in the foreground."""
    archive = Path(env.get("CTFLOW_ARCHIVE", ""))
    verify(archive, env.get("CTFLOW_ARCHIVE_SHA256", ""))
    work = Path(env.get("CTFLOW_SERVE_DIR") or tempfile.mkdtemp(prefix="ctflow-serve-"))
    store = work / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, store / "model.mar")
    verify(store / "model.mar", env["CTFLOW_ARCHIVE_SHA256"])  # the copy TorchServe reads
    config = work / "config.properties"
    host = env.get("CTFLOW_SERVE_HOST", "0.0.0.0")
    port, name = int(env.get("PORT", "8080")), env.get("CTFLOW_MODEL_NAME", "model")
    # TorchServe's pid file and its workers' Unix sockets: this server's own, on a short path (a socket's
    # path must stay under 108 bytes, which a folder deep in a home would not).
    tmp = Path(tempfile.gettempdir(), f"ctflow-ts-{port}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    config.write_text(config_properties(host=host, port=port, model_store=store, model_name=name, tmp=tmp))
    torchserve = shutil.which("torchserve", path=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    if torchserve is None:
        raise RefusedArchive("torchserve is not installed (pip install 'ctflow[serve]')")
    argv = [torchserve, "--foreground", "--ncs", "--disable-token-auth", "--ts-config", str(config)]
    (work / "logs").mkdir(exist_ok=True)
    logs = str(work / "logs")
    return argv, {**env, "LOG_LOCATION": logs, "METRICS_LOCATION": logs, "TMPDIR": str(tmp), "TEMP": str(tmp)}


def main() -> int:
    try:
        argv, env = prepare(os.environ)
    except (RefusedArchive, KeyError, ValueError) as exc:
        print(f"model server: {exc}", file=sys.stderr, flush=True)
        return 2
    os.execve(argv[0], argv, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

"""Runs a real `omninode up` (the binary the workspace builds) for the SDK tests."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from omninode_client import Client, Endpoints, OmniNodeError


def _binary() -> str:
    explicit = os.environ.get("OMNINODE_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path(__file__).resolve().parents[3] / "target")
    return str(Path(target) / "debug" / "omninode")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mesh:
    """One `omninode up` process on free ports with its own data directory."""

    def __init__(self, extra=None, client_options=None):
        self.data = tempfile.TemporaryDirectory()
        self.endpoints = Endpoints(*(f"127.0.0.1:{_free_port()}" for _ in range(3)))
        env = dict(os.environ)
        env.update({
            "OMNINODE_DATA_DIR": self.data.name,
            "STAMPING_PORT": self.endpoints.stamping.rsplit(":", 1)[1],
            "ORCHESTRATOR_PORT": self.endpoints.orchestrator.rsplit(":", 1)[1],
            "REDUCER_PORT": self.endpoints.reducer.rsplit(":", 1)[1],
            "GATEWAY_PORT": str(_free_port()),
            "METRICS_PORT": str(_free_port()),
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            "AGGREGATION_WINDOW_SIZE_MS": "200",
        })
        env.pop("DATABASE_URL", None)
        env.update(extra or {})
        self.process = subprocess.Popen([_binary(), "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = Client(self.endpoints, retries=0, timeout=2, **(client_options or {}))
        deadline = time.monotonic() + 30
        while True:
            try:
                client.hash("ready?")
                break
            except OmniNodeError as error:
                if error.code.name != "UNAVAILABLE" and error.reason != "UNAUTHENTICATED":
                    break
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("omninode up did not start: " + self.process.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        client.close()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.data.cleanup()


@pytest.fixture(scope="session")
def mesh():
    running = Mesh()
    yield running
    running.stop()

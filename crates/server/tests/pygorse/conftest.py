"""A real `cascade serve` on generated data, with API keys, for the PyGorse 0.5.1 suite.

CASCADE_BIN names the binary (`.ci/run` passes the one `cargo test --release` built)."""

import os
import re
import subprocess
import tempfile
import time

import pytest
import requests

WRITE_KEY = "gorse-write-key-1"
READ_KEY = "gorse-read-key-1"


def _bin():
    b = os.environ.get("CASCADE_BIN")
    if not b or not os.access(b, os.X_OK):
        pytest.exit("CASCADE_BIN must name a built `cascade` binary", returncode=2)
    return b


@pytest.fixture(scope="session")
def server():
    cascade = _bin()
    tmp = tempfile.TemporaryDirectory(prefix="cascade-pygorse-")
    world, data = os.path.join(tmp.name, "world"), os.path.join(tmp.name, "data")
    subprocess.run(
        [cascade, "generate", "--out", world, "--items", "400", "--users", "80",
         "--events", "8000", "--seed", "7"],
        check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [cascade, "import", "--data-dir", data, "--format", "jsonl", world],
        check=True, stdout=subprocess.DEVNULL)
    config = os.path.join(tmp.name, "cascade.toml")
    with open(config, "w") as f:
        f.write(f'[auth]\nread_keys = ["{READ_KEY}"]\nwrite_keys = ["{WRITE_KEY}"]\n'
                '[models]\npopular_refresh_ms = 100\n')
    env = dict(os.environ, CASCADE_LOG="warn")
    proc = subprocess.Popen(
        [cascade, "serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--config", config],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = proc.stdout.readline()
    m = re.match(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        pytest.exit(f"cascade serve did not start: {line!r}", returncode=2)
    base = m.group(1)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/api/health/ready", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    yield base
    proc.kill()
    proc.wait()
    tmp.cleanup()

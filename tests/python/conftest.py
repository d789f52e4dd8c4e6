"""Fixtures for the conformance tests: a real `meridian serve` on port 0 in a temporary data
directory, ready once it logs its stable `api listening on` line."""

import json
import os
import subprocess
import threading

import pytest

BINARY = os.environ.get("MERIDIAN_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "meridian"))
START_LIMIT_SECONDS = 60


class Server:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--data-dir", str(data_dir), "--api-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        ready = threading.Event()
        self.url = None

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if "api listening on " in line and self.url is None:
                    self.url = line.split("api listening on ", 1)[1].strip()
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_LIMIT_SECONDS) or self.url is None:
            self.proc.kill()
            raise RuntimeError("meridian did not start:\n" + "".join(self.log))
        with open(os.path.join(data_dir, "bootstrap.json")) as f:
            secrets = json.load(f)
        self.api_key = secrets["api_key"]
        self.authtoken = secrets["authtoken"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.stop()

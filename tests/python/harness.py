"""Shared test harness, standard library and pytest only (it runs in both virtualenvs): starts a real
`meridian serve` on port 0 in a temporary data directory, reads the addresses it logs, talks
to its API with urllib, runs `curl`, and relays TCP connections so tests can cut them."""

import json
import os
import re
import socket
import subprocess
import threading
import urllib.request

import pytest

BINARY = os.environ.get(
    "MERIDIAN_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "meridian")
)
START_LIMIT_SECONDS = 60
LISTENING = re.compile(r"pop (\S+) (agent|http|https) listening on (\w+)://(\S+)")


class Server:
    """`meridian serve` with every listener on port 0."""

    def __init__(self, data_dir):
        self.data_dir = str(data_dir)
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--data-dir", self.data_dir, "--api-listen", "127.0.0.1:0",
             "--agent-port", "0", "--http-port", "0", "--https-port", "0",
             "--dns-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        self.url = None
        self.pops = {}  # code -> {"agent": "ip:port", "http": ..., "https": ...}
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = LISTENING.search(line)
                if m:
                    self.pops.setdefault(m.group(1), {})[m.group(2)] = m.group(4)
                if "api listening on " in line and self.url is None:
                    self.url = line.split("api listening on ", 1)[1].strip()
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_LIMIT_SECONDS) or self.url is None:
            self.proc.kill()
            raise RuntimeError("meridian did not start:\n" + "".join(self.log))
        with open(os.path.join(self.data_dir, "bootstrap.json")) as f:
            secrets = json.load(f)
        self.api_key = secrets["api_key"]
        self.authtoken = secrets["authtoken"]
        self.ca = os.path.join(self.data_dir, "ca.pem")

    def api(self, method, path, body=None):
        """Calls the API; returns (status, parsed JSON or None)."""
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + self.api_key, "ngrok-version": "2",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def addr(self, pop, kind):
        return self.pops[pop][kind]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    """A fresh `meridian serve` for one test."""
    s = Server(tmp_path / "data")
    yield s
    s.stop()


def curl(*args):
    """Runs curl; returns (exit code, HTTP status or 0, body)."""
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60)
    body, _, status = out.stdout.rpartition("\n")
    return out.returncode, int(status or 0), body


def curl_https(server, pop, host, path="/", *extra):
    """HTTPS to `host` through one PoP, trusting Meridian's CA, resolving the name to that PoP."""
    ip, port = server.addr(pop, "https").rsplit(":", 1)
    return curl("--cacert", server.ca, "--resolve", f"{host}:{port}:{ip}", f"https://{host}:{port}{path}", *extra)


def curl_http(server, pop, host, path="/", *extra):
    ip, port = server.addr(pop, "http").rsplit(":", 1)
    return curl("--resolve", f"{host}:{port}:{ip}", f"http://{host}:{port}{path}", *extra)


class Relay:
    """A TCP relay on `ip`, port 0, to `target`, whose live connections can be cut at once:
    a network failure between an agent and its PoP, on demand."""

    def __init__(self, ip, target):
        self.target = target
        self.listener = socket.socket()
        self.listener.bind((ip, 0))
        self.listener.listen()
        self.addr = "%s:%d" % self.listener.getsockname()
        self.live = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            with self.lock:
                self.live += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            for s in self.live:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.live = []

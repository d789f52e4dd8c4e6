"""The edge against the unmodified `ngrok` Python SDK (pinned in requirements.txt): pinning
enforced per PoP, PATCH taking effect at once, endpoints going offline with their agent and
back after a reconnect, TCP addresses served only in their region, and bind refusals."""

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import Relay, curl_http, curl_https

AGENT = os.path.join(os.path.dirname(__file__), "agent_proc.py")
WAIT_SECONDS = 30


class Upstream:
    """A local HTTP server that records what reached it."""

    def __init__(self, name="upstream"):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                body = json.dumps({"name": name, "path": self.path,
                                   "xff": self.headers.get("X-Forwarded-For"),
                                   "proto": self.headers.get("X-Forwarded-Proto"),
                                   "host": self.headers.get("X-Forwarded-Host")}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Agent:
    """An agent process; `results` holds one dict per endpoint."""

    def __init__(self, server, server_addr, endpoints, authtoken=None):
        cfg = {"authtoken": authtoken or server.authtoken, "server_addr": server_addr,
               "ca": server.ca, "endpoints": endpoints}
        self.proc = subprocess.Popen([sys.executable, AGENT, json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.results = []
        for line in self.proc.stdout:
            if line.strip() == "READY":
                break
            if line.startswith("{"):
                self.results.append(json.loads(line))
        assert len(self.results) == len(endpoints), f"agent output: {self.results}"

    def kill(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def agents():
    started = []
    yield started
    for a in started:
        a.kill()


def reserve(server, domain, *pops):
    status, body = server.api("POST", "/reserved_domains",
                              {"domain": domain, "resolves_to": [{"value": p} for p in pops]})
    assert status == 201, body
    return body["id"]


def wait_until(check, what):
    """Polls `check` until it is true; a bound on a hang, not a timing assertion."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_pinned_domain_is_served_only_by_its_pops(server, agents):
    domain_id = reserve(server, "app.example.test", "us-cal-1", "eu")
    up = Upstream()
    # The agent connects to Tokyo, outside the set: any PoP's agent serves any allowed PoP.
    agent = Agent(server, server.addr("jp", "agent"), [{"upstream": up.port, "opts": {"domain": "app.example.test"}}])
    agents.append(agent)
    assert agent.results == [{"url": "https://app.example.test"}]

    code, status, body = curl_https(server, "eu", "app.example.test", "/eu")
    assert (code, status) == (0, 200), body
    seen = json.loads(body)
    assert (seen["path"], seen["proto"], seen["host"], seen["xff"]) == ("/eu", "https", "app.example.test", "127.0.0.1")
    assert curl_https(server, "us-cal-1", "app.example.test", "/cal")[1] == 200
    assert curl_http(server, "eu", "app.example.test", "/plain")[1] == 200
    assert len(up.requests) == 3

    # Outside the set: the TLS handshake is refused, plain HTTP gets 421, the upstream sees nothing.
    code, status, _ = curl_https(server, "jp", "app.example.test", "/jp")
    assert code == 35 and status == 0, (code, status)
    code, status, body = curl_http(server, "jp", "app.example.test", "/jp")
    assert status == 421, body
    assert "(jp, Tokyo)" in body and "app.example.test" in body and "ERR_NGROK_3210" in body
    assert len(up.requests) == 3, "nothing reached the upstream from Tokyo"

    # A PATCH that adds Tokyo applies to the very next connection.
    status, _ = server.api("PATCH", f"/reserved_domains/{domain_id}",
                           {"resolves_to": [{"value": v} for v in ("us-cal-1", "eu", "jp")]})
    assert status == 200
    assert curl_https(server, "jp", "app.example.test", "/jp")[1] == 200
    assert up.requests[-1][0] == "/jp"
    # And removing it again refuses the next one.
    server.api("PATCH", f"/reserved_domains/{domain_id}", {"resolves_to": [{"value": "eu"}]})
    assert curl_http(server, "jp", "app.example.test", "/jp2")[1] == 421
    # A Host that differs from the SNI is refused.
    code, status, body = curl_https(server, "eu", "app.example.test", "/", "-H", "Host: other.example.test")
    assert status == 421 and "TLS connection was opened for" in body


def test_endpoint_goes_offline_with_its_agent_and_returns_after_reconnect(server, agents):
    reserve(server, "re.example.test")
    up = Upstream()
    relay = Relay("127.0.1.3", server.addr("eu", "agent"))
    agent = Agent(server, relay.addr, [{"upstream": up.port, "opts": {"domain": "re.example.test"}}])
    agents.append(agent)
    assert curl_https(server, "eu", "re.example.test", "/1")[1] == 200

    # The network drops: the SDK reconnects and rebinds under the same URL and id.
    relay.cut()
    wait_until(lambda: relay.accepted >= 2, "the SDK to reconnect")
    wait_until(lambda: curl_https(server, "eu", "re.example.test", "/2")[1] == 200, "the endpoint to return")
    online = [re.search(r"id=(\S+)", l).group(1) for l in server.log if "endpoint online" in l and "re.example.test" in l]
    assert len(online) >= 2 and len(set(online)) == 1, online

    # The agent dies: its endpoint is offline, with ngrok's offline error.
    agent.kill()
    wait_until(lambda: curl_https(server, "eu", "re.example.test", "/3")[1] == 404, "the endpoint to go offline")
    code, status, body = curl_https(server, "eu", "re.example.test", "/4")
    assert status == 404 and "ERR_NGROK_3200" in body and "offline" in body


def test_tcp_address_listens_only_in_its_region(server, agents):
    status, addr = server.api("POST", "/reserved_addrs", {"region": "eu", "description": "echo"})
    assert status == 201, addr
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()

    def serve_echo():
        while True:
            conn, _ = echo.accept()
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")], daemon=True).start()

    threading.Thread(target=serve_echo, daemon=True).start()
    agent = Agent(server, server.addr("us", "agent"),
                  [{"upstream": echo.getsockname()[1], "opts": {"proto": "tcp", "remote_addr": addr["addr"]}}])
    agents.append(agent)
    assert agent.results == [{"url": "tcp://" + addr["addr"]}]
    port = int(addr["addr"].rsplit(":", 1)[1])
    eu_ip = server.addr("eu", "agent").rsplit(":", 1)[0]
    jp_ip = server.addr("jp", "agent").rsplit(":", 1)[0]

    def echo_through(ip):
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(b"ping over tcp")
            return s.recv(100)

    wait_until(lambda: _connects(eu_ip, port), "the eu listener")
    assert echo_through(eu_ip) == b"ping over tcp"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((jp_ip, port), timeout=10)


def test_proxy_protocol_reaches_the_upstream_when_asked(server, agents):
    status, addr = server.api("POST", "/reserved_addrs", {"region": "au"})
    assert status == 201, addr
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()

    def echo(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve():
        while True:
            conn, _ = upstream.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    agent = Agent(server, server.addr("us", "agent"), [{"upstream": upstream.getsockname()[1],
                  "opts": {"proto": "tcp", "remote_addr": addr["addr"], "proxy_proto": "1"}}])
    agents.append(agent)
    assert "url" in agent.results[0], agent.results
    au_ip = server.addr("au", "agent").rsplit(":", 1)[0]
    port = int(addr["addr"].rsplit(":", 1)[1])
    wait_until(lambda: _connects(au_ip, port), "the au listener")
    with socket.create_connection((au_ip, port), timeout=10) as s:
        s.sendall(b"hello")
        echoed = b""
        while not echoed.endswith(b"hello"):
            chunk = s.recv(4096)
            if not chunk:
                break
            echoed += chunk
    # Each connection, the readiness probe's included, starts with its own PROXY header.
    assert re.match(rb"PROXY TCP4 127\.0\.0\.1 " + au_ip.encode().replace(b".", rb"\.") + rb" \d+ %d\r\n" % port, echoed), echoed


def _connects(ip, port):
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_binds_are_checked(server, agents):
    reserve(server, "mine.example.test")
    up = Upstream()
    bad = Agent(server, server.addr("us", "agent"), [{"upstream": up.port, "opts": {"domain": "mine.example.test"}}],
                authtoken="mrd_tok_wrong")
    agents.append(bad)
    assert "ERR_NGROK_107" in bad.results[0]["error"]

    agent = Agent(server, server.addr("us", "agent"), [
        {"upstream": up.port, "opts": {"domain": "unreserved.example.test"}},
        {"upstream": up.port, "opts": {"domain": "mine.example.test"}},
        {"upstream": up.port, "opts": {"proto": "tcp", "remote_addr": "eu.tcp.meridian.test:29999"}},
    ])
    agents.append(agent)
    assert "ERR_NGROK_7117" in agent.results[0]["error"]
    assert agent.results[1] == {"url": "https://mine.example.test"}
    assert "ERR_NGROK_7117" in agent.results[2]["error"]

    # A second agent for the same domain is refused unless both pool.
    second = Agent(server, server.addr("eu", "agent"), [{"upstream": up.port, "opts": {"domain": "mine.example.test"}}])
    agents.append(second)
    assert "ERR_NGROK_334" in second.results[0]["error"]


def test_pooled_agents_share_an_endpoint(server, agents):
    reserve(server, "pool.example.test")
    ups = [Upstream("a"), Upstream("b")]
    for up in ups:
        agents.append(Agent(server, server.addr("us", "agent"),
                            [{"upstream": up.port, "domain": "pool.example.test", "pooled": True}]))
    assert all(a.results == [{"url": "https://pool.example.test"}] for a in agents), [a.results for a in agents]
    names = {json.loads(curl_https(server, "ap", "pool.example.test", f"/{i}")[2])["name"] for i in range(6)}
    assert names == {"a", "b"}, "requests are balanced across the pool"


def test_revoked_grants_stop_their_agents(server, agents):
    status, cred = server.api("POST", "/credentials", {"description": "revocable"})
    assert status == 201, cred
    up = Upstream()
    first_id = reserve(server, "gone.example.test")
    reserve(server, "kept.example.test")
    agent = Agent(server, server.addr("us", "agent"), [
        {"upstream": up.port, "opts": {"domain": "gone.example.test"}},
        {"upstream": up.port, "opts": {"domain": "kept.example.test"}},
    ], authtoken=cred["token"])
    agents.append(agent)
    assert curl_https(server, "eu", "gone.example.test")[1] == 200

    # Deleting a reservation stops its endpoint (StopTunnel) and leaves the others serving.
    assert server.api("DELETE", f"/reserved_domains/{first_id}")[0] == 204
    wait_until(lambda: curl_https(server, "eu", "gone.example.test")[1] == 404, "the endpoint to stop")
    assert any("reservation gone" in line for line in server.log)
    assert curl_https(server, "eu", "kept.example.test")[1] == 200

    # Revoking the credential stops the agent (Stop, then the session closes); its reconnects
    # fail authentication, so the endpoint stays offline.
    assert server.api("DELETE", f"/credentials/{cred['id']}")[0] == 204
    wait_until(lambda: curl_https(server, "eu", "kept.example.test")[1] == 404, "the agent to be stopped")
    assert any("credential revoked" in line for line in server.log)
    wait_until(lambda: any("bad authtoken" in line for line in server.log), "a refused reconnect")
    assert curl_https(server, "eu", "kept.example.test")[1] == 404

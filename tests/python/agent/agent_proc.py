"""One agent process, driven by a test: the unmodified `ngrok` SDK binding the endpoints given
as JSON in argv[1]. Prints one JSON line per endpoint (`{"url": ...}` or `{"error": ...}`),
then `READY`, then serves until stdin closes or it is killed. It runs apart from pytest because
the SDK sometimes aborts at interpreter exit; tests judge what they observe over the tunnel."""

import asyncio
import json
import sys

import ngrok

cfg = json.loads(sys.argv[1])


async def pooled(endpoint):
    """`forward()` in SDK 1.7.0 does not pass pooling on; the builder does."""
    session = await (ngrok.SessionBuilder().authtoken(cfg["authtoken"])
                     .server_addr(cfg["server_addr"]).root_cas(cfg["ca"]).connect())
    builder = session.http_endpoint().domain(endpoint["domain"]).pooling_enabled(True)
    listener = await builder.listen_and_forward("http://127.0.0.1:%d" % endpoint["upstream"])
    return session, listener


keep = []
for i, endpoint in enumerate(cfg["endpoints"]):
    if endpoint.get("pooled"):
        try:
            keep.append(asyncio.run(pooled(endpoint)))
            print(json.dumps({"url": keep[-1][1].url()}), flush=True)
        except Exception as err:
            print(json.dumps({"error": " ".join(str(a) for a in err.args)}), flush=True)
        continue
    opts = dict(authtoken=cfg["authtoken"], server_addr=cfg["server_addr"], root_cas=cfg["ca"])
    if i == 0:
        opts["force_new_session"] = True
    opts.update(endpoint.get("opts", {}))
    try:
        listener = ngrok.forward(endpoint["upstream"], **opts)
        print(json.dumps({"url": listener.url()}), flush=True)
    except Exception as err:  # the SDK raises ValueError/RuntimeError with the edge's message
        print(json.dumps({"error": " ".join(str(a) for a in err.args)}), flush=True)
print("READY", flush=True)
sys.stdin.read()

#!/usr/bin/env python3
"""Hot swap under load against a running `cascade serve`: four client threads request `home`
in a loop while this script activates bundle A, then B, then rolls back, through the admin
API. Prints failures and latency percentiles outside and during the swaps.

    python3 bench/swap_load.py http://127.0.0.1:18080 VERSION_A VERSION_B
"""
import json
import sys
import threading
import time
import urllib.request

base, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
stop = False
results = []  # (start, seconds, status, version)
lock = threading.Lock()


def client(k):
    n = 0
    while not stop:
        url = f"{base}/v1/recommendations/home?user_id=u{(k * 977 + n) % 10000}&n=10"
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
                status, version = r.status, body.get("model_version", "")
                if not body.get("items"):
                    status = -1
        except Exception as e:  # noqa: BLE001 - any failure counts
            status, version = getattr(e, "code", 0), ""
        with lock:
            results.append((t, time.time() - t, status, version))
        n += 1


def post(path):
    req = urllib.request.Request(f"{base}{path}", data=b"{}", method="POST",
                                 headers={"content-type": "application/json"})
    t = time.time()
    with urllib.request.urlopen(req, timeout=600) as r:
        body = json.load(r)
    return t, time.time(), body


threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
time.sleep(5)
swaps = []
for path in (f"/v1/admin/models/{a}/activate", f"/v1/admin/models/{b}/activate",
             "/v1/admin/models/rollback"):
    t0, t1, body = post(path)
    swaps.append((t0, t1))
    print(f"{path}: {body.get('active')} in {1000 * (t1 - t0):.0f} ms (server {body.get('took_ms', 0):.0f} ms)")
    time.sleep(5)
stop = True
for t in threads:
    t.join()


def p(v, q):
    v = sorted(v)
    return 1000 * v[min(len(v) - 1, int(len(v) * q))] if v else 0.0


during = [r for r in results if any(r[0] + r[1] >= s0 and r[0] <= s1 for s0, s1 in swaps)]
outside = [r for r in results if r not in during]
failed = [r for r in results if r[2] != 200]
print(f"{len(results)} requests, {len(failed)} failed; versions seen {sorted({r[3] for r in results})}")
print(f"outside swaps: {len(outside)} requests, p50 {p([r[1] for r in outside], .5):.2f} ms, "
      f"p99 {p([r[1] for r in outside], .99):.2f} ms")
print(f"during swaps: {len(during)} requests, p50 {p([r[1] for r in during], .5):.2f} ms, "
      f"p99 {p([r[1] for r in during], .99):.2f} ms")

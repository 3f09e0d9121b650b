#!/usr/bin/env python3
"""Time signed GitHub webhook deliveries against a hub: one keep-alive connection, one delivery
at a time (as GitHub sends them), each a fresh X-GitHub-Delivery, so every one is published.

    loadtest/webhook_latency.py HOST:PORT COUNT [PADDING_BYTES]

The body is tests/github/fixtures/webhook_pull_request.json with the pull request's body padded
to PADDING_BYTES (GitHub sends a pull request's whole description). The hub must run with
MT_GITHUB_WEBHOOK_SECRET="It's a Secret to Everybody". Prints p50/p90/p99/max of the time from
sending the request to reading the whole answer, after 50 warm-up deliveries. 127.0.0.1 only.
"""
import hashlib
import hmac
import http.client
import json
import pathlib
import sys
import time
import uuid

SECRET = b"It's a Secret to Everybody"
FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "tests/github/fixtures/webhook_pull_request.json"


def main():
    address, count = sys.argv[1], int(sys.argv[2])
    padding = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    host, port = address.rsplit(":", 1)
    if host != "127.0.0.1":
        sys.exit("load tests talk to 127.0.0.1 only")
    payload = json.loads(FIXTURE.read_text())
    payload["pull_request"]["body"] = "x" * padding
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    times = []
    for i in range(count + 50):
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        }
        start = time.perf_counter()
        connection.request("POST", "/github/webhook", body, headers)
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 202:
            sys.exit(f"delivery {i}: HTTP {response.status}")
        if i >= 50:
            times.append(elapsed * 1000)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(len(times) * q))]
    print(f"{count} deliveries of {len(body)} B: p50 {pick(0.5):.3f} ms, p90 {pick(0.9):.3f} ms, "
          f"p99 {pick(0.99):.3f} ms, max {times[-1]:.3f} ms")


if __name__ == "__main__":
    main()

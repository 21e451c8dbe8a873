"""Requests per second of the study web app under a bounded loopback load (issue 15: guards cost <= 10%).

Starts `dermdiff study serve` (timed task, access codes) on 127.0.0.1 from one or two source trees and
drives each with a few client threads, every thread a rater on its own keep-alive connection doing what
the page does: log in once, then `GET /api/next`, `GET /image/<id>`, `POST /api/answer`, repeated. With
`--baseline DIR` (a checkout of the code before a change, e.g. `git archive main dermdiff | tar -x -C DIR`)
both servers run side by side and the rounds alternate, so load from other processes hits both alike.
Reported: requests/s on wall clock (what this machine delivered while shared) and per CPU-second of the
server process (what the server's own work costs, from /proc; less sensitive to other jobs), median round.

    python benchmarks/study_load.py --baseline /tmp/study-base     # ~1 minute
    python benchmarks/study_load.py --quick                          # smoke run (seconds)

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np
from PIL import Image

HOST = "127.0.0.1"


def make_images(folder: str, count: int, seed: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"img_{index}.png"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One `dermdiff study serve` process on a loopback port, importing dermdiff from `tree`."""

    def __init__(self, tree: str, work: str, real: str, synthetic: str, raters: list[str]):
        self.port = free_port()
        codes = ",".join(f"{rater}:code-{rater}" for rater in raters)
        env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
        self.log = open(os.path.join(work, f"server_{self.port}.log"), "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dermdiff.cli", "study", "serve", "--real", real, "--synthetic", synthetic,
             "--db", os.path.join(work, f"study_{self.port}.sqlite"), "--task", "timed", "--image-size", "32",
             "--access-codes", codes, "--host", HOST, "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server from {tree} exited; see {self.log.name}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server from {tree} did not start; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


def rater_loop(port: int, rater: str, iterations: int, counts: list, errors: list) -> None:
    """Log in, then `iterations` times: next, image, answer. Appends the number of requests made."""
    origin = f"http://{HOST}:{port}"
    browser = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    made = 0

    def call(method, path, body=None, headers=None):
        nonlocal made
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        made += 1
        return response, data

    try:
        form = urllib.parse.urlencode({"rater": rater, "code": f"code-{rater}"})
        response, _ = call("POST", "/login", form, {**browser, "Content-Type": "application/x-www-form-urlencoded"})
        cookie = response.getheader("Set-Cookie").split(";", 1)[0]
        session = {"Cookie": cookie, "Accept": "application/json"}
        for _ in range(iterations):
            response, data = call("GET", "/api/next", headers=session)
            state = json.loads(data)
            if state["finished"]:
                break
            item = state["items"][0]
            response, data = call("GET", f"/image/{item}", headers=session)
            if response.status != 200:
                raise RuntimeError(f"/image answered {response.status}")
            body = json.dumps({"unit": state["unit"], "item": item, "answer": "real", "response_ms": 900})
            response, data = call("POST", "/api/answer", body,
                                  {**session, **browser, "Content-Type": "application/json"})
            if response.status != 201:
                raise RuntimeError(f"/api/answer answered {response.status}: {data[:200]!r}")
    except Exception as error:  # noqa: BLE001 - reported by the main thread
        errors.append(f"{rater}: {error}")
    finally:
        connection.close()
        counts.append(made)


def one_round(server: Server, raters: list[str], iterations: int) -> tuple[float, float, int]:
    """(wall seconds, server CPU seconds, requests) for all raters running at once."""
    counts, errors = [], []
    threads = [threading.Thread(target=rater_loop, args=(server.port, rater, iterations, counts, errors))
               for rater in raters]
    cpu0, wall0 = cpu_seconds(server.process.pid), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(server.process.pid) - cpu0
    if errors:
        raise RuntimeError("; ".join(errors))
    return wall, cpu, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="source tree of the code before the change (imported via PYTHONPATH)")
    parser.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="source tree measured (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (alternating)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent raters per round")
    parser.add_argument("--iterations", type=int, default=100, help="next/image/answer cycles per rater per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10 cycles")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.iterations = 2, 10
    trees = {"after": args.tree} if not args.baseline else {"before": args.baseline, "after": args.tree}
    with tempfile.TemporaryDirectory() as work:
        real, synthetic = os.path.join(work, "real"), os.path.join(work, "synthetic")
        per_folder = args.iterations  # one unit per image: every rater can answer `iterations` per round
        make_images(real, per_folder, 0)
        make_images(synthetic, per_folder, 1)
        raters = [f"r{round_}_{client}" for round_ in range(args.rounds) for client in range(args.clients)]
        servers = {name: Server(tree, work, real, synthetic, raters) for name, tree in trees.items()}
        results = {name: [] for name in servers}
        try:
            for round_ in range(args.rounds):
                order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                for name in order:
                    mine = raters[round_ * args.clients:(round_ + 1) * args.clients]
                    results[name].append(one_round(servers[name], mine, args.iterations))
        finally:
            for server in servers.values():
                server.stop()
    print(f"{args.clients} raters x {args.iterations} cycles (next + image + answer) per round, "
          f"{args.rounds} rounds; median over rounds:")
    medians = {}
    for name, rounds in results.items():
        wall_rate = float(np.median([requests / wall for wall, _, requests in rounds]))
        cpu_rate = float(np.median([requests / cpu for _, cpu, requests in rounds if cpu > 0]))
        medians[name] = (wall_rate, cpu_rate)
        print(f"  {name:6s}: {wall_rate:7.1f} requests/s wall, {cpu_rate:7.1f} requests per server CPU-second")
    if "before" in medians:
        wall_ratio = medians["after"][0] / medians["before"][0]
        cpu_ratio = medians["after"][1] / medians["before"][1]
        print(f"  after / before: {wall_ratio:.3f} (wall), {cpu_ratio:.3f} (server CPU)")


if __name__ == "__main__":
    main()

"""Seconds from `pgwatch-cpa demo` starting to its first full scrape (the README's "ready in N s" figure).

Full scrape: /readyz answers 200 and /metrics holds pg_stat_statements_calls_total, cpa_cache_requests_total and
redis_key_family_keys samples. The demo runs as a subprocess (what a user types), is stopped with SIGINT right
after, and must exit cleanly.

    python -m bench.bench_demo_startup [--runs 3] [--timeout 120]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from pgwatch_cpa.sandbox import free_port

FAMILIES = ("pg_stat_statements_calls_total", "cpa_cache_requests_total", "redis_key_family_keys")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def full_scrape(base: str) -> bool:
    try:
        if _get(base + "/readyz")[0] != 200:
            return False
        text = _get(base + "/metrics")[1]
    except OSError:
        return False
    lines = text.splitlines()
    return all(any(line.startswith((name + "{", name + " ")) for line in lines) for name in FAMILIES)


def one_run(timeout: float) -> float:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "demo", "--listen", f"127.0.0.1:{port}",
                             "--duration", str(timeout + 30)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"demo exited early ({proc.returncode}):\n{proc.stdout.read().decode()}")  # type: ignore[union-attr]
            if full_scrape(base):
                return time.monotonic() - started
            time.sleep(0.25)
        raise SystemExit(f"no full scrape within {timeout:.0f}s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    import os

    figures = []
    for n in range(args.runs):
        seconds = one_run(args.timeout)
        figures.append(seconds)
        print(f"run {n + 1}: first full scrape after {seconds:.1f}s", flush=True)
    print(f"demo startup (uid {os.geteuid()}): median {statistics.median(figures):.1f}s, max {max(figures):.1f}s "
          f"over {len(figures)} runs (target <= 60s)")


if __name__ == "__main__":
    main()

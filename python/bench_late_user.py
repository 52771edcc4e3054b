#!/usr/bin/python3
"""A late user behind another's backlog, on real processes.

Starts `switchyard endpoint up` (2 managers x 8 workers, tokens and CurveZMQ
on, free loopback ports, state in a temp dir), makes tokens for alice and bob
and shares the endpoint with both. alice submits --noops no-op tasks with
`switchyard submit`; once that returns, bob submits 10 tasks that each log
their own start (`date +%s.%N`) and sleep 0.1 s. Each of bob's start delays
is what his task logged minus the moment his `switchyard submit` began, so
it counts the client, the forwarder, the link, the interchange's turns and
the exec.

  python3 python/bench_late_user.py                 # bin/switchyard, 1,000,000 no-ops
  python3 python/bench_late_user.py --bin /tmp/old/switchyard --noops 100000
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("SWITCHYARD_BIN", os.path.join(HERE, "..", "bin", "switchyard")))
    ap.add_argument("--noops", type=int, default=1_000_000, help="alice's no-op tasks (default 1000000)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="switchyard-late-user-")
    up = subprocess.Popen([a.bin, "endpoint", "up", "--free-ports", "--state-dir", os.path.join(d, "var"),
                           "--managers", "2", "--workers", "8"] + (["--allow-root"] if os.getuid() == 0 else []),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        api = None
        for line in up.stdout:
            m = re.search(r"export SWITCHYARD_API=(\S+)\)", line)
            if m:
                api = m.group(1)
                break
        if api is None:
            sys.exit("endpoint up ended before printing its API address")
        threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
        admin = open(os.path.join(d, "var", "forwarder", "admin.token")).read().strip()

        def run(args, token=admin):
            env = dict(os.environ, SWITCHYARD_API=api, SWITCHYARD_TOKEN=token)
            return subprocess.run([a.bin] + args, env=env, check=True, capture_output=True, text=True).stdout

        deadline = time.time() + 60
        while '"connected":true' not in run(["endpoint", "list", "--json"]).replace(" ", ""):
            if time.time() > deadline:
                sys.exit("the endpoint did not connect within 60 s")
            time.sleep(0.05)
        alice = re.search(r"(syt_\S+)", run(["token", "create", "alice"])).group(1)
        bob = re.search(r"(syt_\S+)", run(["token", "create", "bob"])).group(1)
        run(["endpoint", "share", "local", "--user", "alice", "--user", "bob"])

        t0 = time.time()
        run(["submit", "-e", "local", "--kind", "noop", "-n", str(a.noops)], token=alice)
        alice_s = time.time() - t0
        log = os.path.join(d, "bob-starts")
        began = time.time()
        ids = run(["submit", "-e", "local", "-n", "10", "--", "sh", "-c", f"date +%s.%N >> {log}; sleep 0.1"], token=bob).split()
        accepted = time.time()
        run(["wait", "--quiet"] + ids, token=bob)
        delays = sorted((float(x) - began) * 1000 for x in open(log).read().split())
        out = {"alice_noops": a.noops, "alice_submit_s": round(alice_s, 2),
               "bob_accepted_ms": round((accepted - began) * 1000, 1),
               "bob_start_ms": {"median": round(statistics.median(delays), 1), "max": round(max(delays), 1),
                                "all": [round(x, 1) for x in delays]}}
        if a.json:
            print(json.dumps(out))
        else:
            print(f"alice: {a.noops} no-ops submitted in {alice_s:.2f} s; bob's 10 accepted {out['bob_accepted_ms']} ms "
                  f"after his submit began; their starts: median {out['bob_start_ms']['median']} ms, "
                  f"max {out['bob_start_ms']['max']} ms {out['bob_start_ms']['all']}")
    finally:
        up.terminate()
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""No-op Python functions through Switchyard's Executor, measured the way the
Parsl HTEX peer harness measures them (its bench_htex.py), so the two can run
side by side on one machine.

It starts an endpoint with `switchyard endpoint up` (forwarder, interchange,
one manager with --workers 2 and two Python workers; defaults otherwise:
tasks stored, CurveZMQ on both links) on free loopback ports, or targets a
running one with --url/--endpoint, and measures:
  warm-up  one call (includes the Python workers' start), then --warmup calls
  (a)      --n no-op calls submitted in a loop, then every result awaited:
           first submit to last result, --reps times (median reported)
  (b)      --lat sequential round trips (submit, result): median and p99 ms
plus CPU seconds of each process per phase.

  PYTHONPATH=python /usr/bin/python3 python/bench_executor.py
  PYTHONPATH=python /usr/bin/python3 python/bench_executor.py --parsl-peer /work/parsl-peer

--parsl-peer DIR first runs DIR/run.sh (the Parsl HTEX harness) with the same
--n, --reps, --lat, --warmup and 2 workers, then this benchmark, and prints
both with their ratio: one run, one machine, the same load.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

from localendpoint import LocalEndpoint  # noqa: E402
from switchyard import Executor  # noqa: E402


def noop():
    return 0


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


class CpuMeter:
    def __init__(self, groups):
        self.groups = groups  # name -> list of pids ("submitter" is this process)

    def snap(self):
        out = {k: sum(cpu_seconds(p) for p in v) for k, v in self.groups.items()}
        out["submitter"] = time.process_time()
        return out

    @staticmethod
    def delta(a, b):
        return {k: round(b[k] - a[k], 2) for k in a}


def batch(ex, n):
    t0 = time.perf_counter()
    futs = [ex.submit(noop) for _ in range(n)]
    t_sub = time.perf_counter()
    for f in futs:
        assert f.result() == 0
    t1 = time.perf_counter()
    return {"n": n, "wall_s": round(t1 - t0, 3), "submit_s": round(t_sub - t0, 3),
            "tasks_per_s": round(n / (t1 - t0), 1), "submit_rate_per_s": round(n / (t_sub - t0), 1)}


def latency(ex, n):
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert ex.submit(noop).result() == 0
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return {"n": n, "median": round(statistics.median(lat), 3), "p99": round(lat[min(n - 1, int(n * 0.99))], 3),
            "p90": round(lat[int(n * 0.9)], 3), "mean": round(statistics.mean(lat), 3),
            "min": round(lat[0], 3), "max": round(lat[-1], 3)}


def run_switchyard(args):
    ep = None
    url, endpoint, token = args.url, args.endpoint, os.environ.get("SWITCHYARD_TOKEN")
    groups = {}
    if not url:
        mgr = ["--prefetch", str(args.prefetch)] if args.prefetch is not None else []
        ep = LocalEndpoint(endpoint=endpoint, workers=args.workers, manager_args=mgr)
        url, token = ep.url, ep.token
        groups = {k: [v] for k, v in ep.pids().items()}
    res = {"system": "switchyard", "python": sys.version.split()[0], "python_exe": sys.executable,
           "cpus": os.cpu_count(), "args": vars(args), "url": url}
    try:
        with Executor(endpoint=endpoint, url=url, token=token) as ex:
            t0 = time.perf_counter()
            assert ex.submit(noop).result() == 0
            res["first_task_s_incl_worker_start"] = round(time.perf_counter() - t0, 3)
            batch(ex, args.warmup)
            if ep:
                groups["python_workers"] = children(ep.pids()["manager"])
            meter = CpuMeter(groups)
            res["loadavg_at_start"] = os.getloadavg()
            print(f"switchyard warm: first call {res['first_task_s_incl_worker_start']}s; "
                  f"processes {groups}", flush=True)
            reps = []
            for r in range(args.reps):
                c0 = meter.snap()
                b = batch(ex, args.n)
                b["cpu_s"] = CpuMeter.delta(c0, meter.snap())
                reps.append(b)
                print(f"switchyard (a) rep {r}: {b}", flush=True)
            res["a_throughput_reps"] = reps
            res["a_median_tasks_per_s"] = statistics.median(x["tasks_per_s"] for x in reps) if reps else None
            if args.lat:
                c0 = meter.snap()
                lat = latency(ex, args.lat)
                lat["cpu_s"] = CpuMeter.delta(c0, meter.snap())
                res["b_latency_ms"] = lat
                print(f"switchyard (b) latency: {lat}", flush=True)
            res["requests"] = dict(ex.stats)
    finally:
        if ep:
            ep.stop()
    return res


def run_parsl(args):
    """Runs the Parsl HTEX peer harness and reads its JSON."""
    peer = os.path.abspath(args.parsl_peer)
    out = os.path.join(peer, "results", "side-by-side.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [os.path.join(peer, "run.sh"), "--n", str(args.n), "--reps", str(args.reps), "--lat", str(args.lat),
           "--warmup", str(args.warmup), "--workers", str(args.workers), "--big", "0", "--out", out]
    print("parsl: " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if re.match(r"^(warm|\(a\)|\(b\))", line):
            print("parsl " + line, flush=True)
    subprocess.run(["rm", "-rf", os.path.join(peer, "runinfo")])
    if p.returncode != 0:
        raise SystemExit(f"the Parsl harness failed ({p.returncode}):\n{p.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="calls per throughput rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lat", type=int, default=200, help="sequential round trips")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="manager --workers (and Python workers)")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="manager --prefetch: tasks a manager holds beyond its workers (default: none given, the interchange sizes it)")
    ap.add_argument("--url", help="a running forwarder's API instead of a new endpoint")
    ap.add_argument("--endpoint", default="bench-py")
    ap.add_argument("--parsl-peer", help="Parsl HTEX harness folder: DIR/run.sh runs the same workload on Parsl (not part of this repository)")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args()

    results = {}
    if args.parsl_peer:
        results["parsl"] = run_parsl(args)
    results["switchyard"] = run_switchyard(args)

    sy = results["switchyard"]
    print("\nno-op Python functions, 2 workers each, first submit to last result "
          f"({args.n} calls, median of {args.reps}); round trip of one call ({args.lat} sequential):")
    rows = [("switchyard", sy.get("a_median_tasks_per_s"), sy.get("b_latency_ms", {}))]
    if "parsl" in results:
        pa = results["parsl"]
        rows.insert(0, ("parsl htex", pa.get("a_median_tasks_per_s"), pa.get("b_latency_ms", {})))
    for name, tput, lat in rows:
        print(f"  {name:11s} {tput or 0:10.0f} calls/s   median {lat.get('median', 0):6.2f} ms   "
              f"p99 {lat.get('p99', 0):6.2f} ms")
    if "parsl" in results and results["parsl"].get("a_median_tasks_per_s"):
        print(f"  ratio       {sy['a_median_tasks_per_s'] / results['parsl']['a_median_tasks_per_s']:10.1f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""A real Switchyard endpoint for tests and benchmarks: forwarder, interchange
and one manager as child processes on free loopback ports, each with its own
state dir in a temp dir. Stdlib only.

When the build is secure by default (the forwarder writes STATE_DIR/admin.token),
it uses that token, creates the endpoint with `switchyard endpoint create` and
starts the interchange and manager with --credentials, as a user would.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Debian's interpreter: the one with python3-cloudpickle.
PYTHON = "/usr/bin/python3"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def go_binary():
    for g in (shutil.which("go"), "/usr/local/go/bin/go"):
        if g and os.path.exists(g):
            return g
    raise RuntimeError("no go toolchain on PATH or in /usr/local/go/bin to build bin/switchyard")


def build(work):
    """Builds ./cmd/switchyard into work (SWITCHYARD_BIN skips the build)."""
    if os.environ.get("SWITCHYARD_BIN"):
        return os.environ["SWITCHYARD_BIN"]
    out = os.path.join(work, "switchyard")
    r = subprocess.run([go_binary(), "build", "-o", out, "./cmd/switchyard"], cwd=REPO,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("go build ./cmd/switchyard failed:\n" + r.stderr[-3000:])
    return out


def wait_for(cond, timeout, what):
    """Polls cond until it is true; raises naming what after timeout."""
    deadline, step = time.monotonic() + timeout, 0.002
    while True:
        if cond():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(min(step, left))
        step = min(step * 2, 0.05)


def http(method, url, body=None, token=None, timeout=30):
    """One request; returns (status, decoded JSON or text); status 0 when unreachable."""
    hdrs = {}
    if token:
        hdrs["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class LocalEndpoint:
    """Starts the three daemons; stop() ends them and removes the temp dir."""

    def __init__(self, endpoint="pytest", workers=2, python_workers=0, persist=True, log_level="info",
                 manager_args=(), forwarder_args=(), interchange_args=()):
        self.endpoint = endpoint
        self.work = tempfile.mkdtemp(prefix="switchyard-py-")
        self.procs = []
        try:
            self._start(workers, python_workers, persist, log_level, list(manager_args), list(forwarder_args),
                        list(interchange_args))
        except BaseException:
            self.stop()
            raise

    def _start(self, workers, python_workers, persist, log_level, manager_args, forwarder_args, interchange_args):
        self.bin = build(self.work)
        http_port, zmq_port, mgr_port, ix_http = free_port(), free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        self.interchange_url = f"http://127.0.0.1:{ix_http}"
        hb = ["--heartbeat-interval", "500ms", "--log-level", log_level]
        nopersist = [] if persist else ["--no-persist"]
        fwd_state = os.path.join(self.work, "forwarder")
        self.forwarder = self._spawn("forwarder", ["forwarder", "--listen-http", f"127.0.0.1:{http_port}",
                                                    "--listen-zmq", f"tcp://127.0.0.1:{zmq_port}",
                                                    "--state-dir", fwd_state] + hb + nopersist + forwarder_args)
        self.token = self._admin_token(fwd_state)
        ix_state = os.path.join(self.work, "interchange")
        ix_args = ["interchange", "--endpoint-id", self.endpoint, "--forwarder", f"tcp://127.0.0.1:{zmq_port}",
                   "--listen-managers", f"tcp://127.0.0.1:{mgr_port}", "--listen-http", f"127.0.0.1:{ix_http}",
                   "--state-dir", ix_state] + hb + nopersist
        if self.token:
            ix_args += ["--credentials", self._enroll()]
        self.interchange = self._spawn("interchange", ix_args + interchange_args)
        mgr_args = ["manager", "--interchange", f"tcp://127.0.0.1:{mgr_port}", "--workers", str(workers),
                    "--python-workers", str(python_workers), "--python", PYTHON,
                    "--manager-id", f"{self.endpoint}-m1", "--state-dir", os.path.join(self.work, "manager")] + hb
        if self.token:
            creds = os.path.join(ix_state, "manager.credentials")
            wait_for(lambda: os.path.isfile(creds) and os.path.getsize(creds) > 0, 15,
                     "the interchange's manager.credentials")
            mgr_args += ["--credentials", creds]
        if os.geteuid() == 0 and "--allow-root" in self._help("manager"):
            mgr_args.append("--allow-root")
        self.manager = self._spawn("manager", mgr_args + manager_args)

        def connected():
            st, ep = http("GET", f"{self.url}/v1/endpoints/{self.endpoint}", token=self.token)
            return st == 200 and ep.get("connected") is True and (ep.get("workers") or 0) >= workers
        try:
            wait_for(connected, 30, f"endpoint {self.endpoint} connected with {workers} workers")
        except TimeoutError:
            raise RuntimeError("endpoint did not come up; logs:\n" + self.logs()) from None

    def _spawn(self, name, args):
        log = open(os.path.join(self.work, name + ".log"), "ab")
        p = subprocess.Popen([self.bin] + args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                             start_new_session=True)
        log.close()
        p.name = name
        self.procs.append(p)
        return p

    def _help(self, cmd):
        r = subprocess.run([self.bin, cmd, "--help"], capture_output=True, text=True, timeout=20)
        return r.stdout + r.stderr

    def _admin_token(self, state):
        """The forwarder's admin token, or None once it has served /healthz for a second without one."""
        path = os.path.join(state, "admin.token")
        found = {}

        def ready():
            if os.path.isfile(path) and os.path.getsize(path) > 0:
                found["token"] = open(path).read().strip()
                return True
            if "healthy" not in found and http("GET", f"{self.url}/healthz")[0] == 200:
                found["healthy"] = time.monotonic()
            return "healthy" in found and time.monotonic() - found["healthy"] > 1
        wait_for(ready, 15, "forwarder up")
        return found.get("token")

    def _enroll(self):
        out = os.path.join(self.work, "endpoint.credentials")
        env = dict(os.environ, SWITCHYARD_API=self.url, SWITCHYARD_TOKEN=self.token)
        r = subprocess.run([self.bin, "endpoint", "create", self.endpoint, "--out", out], capture_output=True,
                           text=True, env=env, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"switchyard endpoint create failed: {(r.stdout + r.stderr)[-500:]}")
        return out

    def pids(self):
        return {p.name: p.pid for p in self.procs}

    def logs(self, tail=3000):
        out = []
        for p in self.procs:
            try:
                with open(os.path.join(self.work, p.name + ".log"), errors="replace") as f:
                    out.append(f"--- {p.name} ---\n{f.read()[-tail:]}")
            except OSError:
                pass
        return "\n".join(out)

    def log(self, name):
        with open(os.path.join(self.work, name + ".log"), errors="replace") as f:
            return f.read()

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        shutil.rmtree(self.work, ignore_errors=True)

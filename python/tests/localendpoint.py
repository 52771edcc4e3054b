"""A real Switchyard endpoint for tests and benchmarks: `switchyard endpoint up`
(forwarder, interchange and one manager, enrolled with each other and linked
with CurveZMQ as by default) on free loopback ports, with its state in a temp
dir. Stdlib only.

When the forwarder writes STATE_DIR/admin.token (HTTP tokens), that token is
used for the API, as a user would.
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


def manager_help(binary):
    r = subprocess.run([binary, "manager", "--help"], capture_output=True, text=True, timeout=20)
    return r.stdout + r.stderr


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
    """Starts `switchyard endpoint up`; stop() ends it and removes the temp dir."""

    def __init__(self, endpoint="pytest", workers=2, python_workers=0, manager_args=()):
        self.endpoint = endpoint
        self.work = tempfile.mkdtemp(prefix="switchyard-py-")
        self.up = None
        try:
            self._start(workers, python_workers, list(manager_args))
        except BaseException:
            self.stop()
            raise

    def _start(self, workers, python_workers, manager_args):
        self.bin = build(self.work)
        http_port, zmq_port, mgr_port, ix_http = free_port(), free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        self.interchange_url = f"http://127.0.0.1:{ix_http}"
        state = os.path.join(self.work, "state")
        args = [self.bin, "endpoint", "up", "--endpoint-id", self.endpoint,
                "--listen-http", f"127.0.0.1:{http_port}", "--listen-zmq", f"tcp://127.0.0.1:{zmq_port}",
                "--listen-managers", f"tcp://127.0.0.1:{mgr_port}", "--interchange-http", f"127.0.0.1:{ix_http}",
                "--state-dir", state, "--heartbeat-interval", "500ms", "--workers", str(workers),
                "--python", PYTHON, f"--manager-arg=--python-workers={python_workers}"]
        args += [f"--manager-arg={a}" for a in manager_args]
        if os.geteuid() == 0 and "--allow-root" in manager_help(self.bin):
            args.append("--manager-arg=--allow-root")  # CI runs as root; managers refuse it otherwise
        self.log_path = os.path.join(self.work, "endpoint.log")
        with open(self.log_path, "ab") as log:
            self.up = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                                       start_new_session=True)
        self.token = self._admin_token(os.path.join(state, "forwarder"))

        def connected():
            if self.up.poll() is not None:
                raise RuntimeError(f"switchyard endpoint up exited ({self.up.returncode}):\n{self.logs()}")
            st, ep = http("GET", f"{self.url}/v1/endpoints/{self.endpoint}", token=self.token)
            return st == 200 and ep.get("connected") is True and (ep.get("workers") or 0) >= workers
        try:
            wait_for(connected, 30, f"endpoint {self.endpoint} connected with {workers} workers")
        except TimeoutError:
            raise RuntimeError("endpoint did not come up; log:\n" + self.logs()) from None

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
        wait_for(ready, 30, "forwarder up")
        return found.get("token")

    def pids(self):
        """The daemons' pids by name (forwarder, interchange, manager)."""
        out = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.up.pid:
                    continue
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if len(argv) > 1:
                out[argv[1].decode()] = int(p)
        return out

    def logs(self, tail=6000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def stop(self):
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
                self.up.wait()
        self.up = None
        shutil.rmtree(self.work, ignore_errors=True)

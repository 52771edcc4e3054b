"""The SDK against a real endpoint (forwarder, interchange, manager with two
Python workers), compared with a local ProcessPoolExecutor where it can run
the same call. Run with Debian's python3 (it has python3-cloudpickle):

    PYTHONPATH=python /usr/bin/python3 -m unittest discover -s python/tests -v
"""
import concurrent.futures
import hashlib
from http import server as httpserver
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cloudpickle  # noqa: E402

from localendpoint import LocalEndpoint, http, wait_for  # noqa: E402
from switchyard import (AuthenticationError, Executor, RemoteTraceback, TaskFailed,  # noqa: E402
                        UnknownEndpointError)

# The workers cannot import this test module: send its functions by value,
# as they would be for a script's own functions.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EP = "sdk-test"
MB10 = 10_000_000


def add(a, b):
    return a + b


def square(x):
    return x * x


class CustomError(Exception):
    pass


def raiser(n):
    return _raise_inner(n)


def _raise_inner(n):
    raise CustomError(f"bad {n}")


def size_and_digest(data):
    return len(data), hashlib.sha256(data).hexdigest()


def make_big(n):
    return bytes(range(256)) * (n // 256) + b"x" * (n % 256)


def die(code):
    os._exit(code)


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


class Box:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def make_adder(n):
    def add_n(x):
        return x + n
    return add_n


ENDPOINT = None
PPE = None


def setUpModule():
    global ENDPOINT, PPE
    # Fork the local pool's workers before any thread of ours exists.
    PPE = concurrent.futures.ProcessPoolExecutor(2)
    PPE.submit(add, 1, 1).result()
    ENDPOINT = LocalEndpoint(endpoint=EP, workers=2)


def tearDownModule():
    PPE.shutdown()
    ENDPOINT.stop()


def executor(**kw):
    return Executor(endpoint=EP, url=ENDPOINT.url, token=ENDPOINT.token, **kw)


class ExecutorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ex = executor()

    @classmethod
    def tearDownClass(cls):
        cls.ex.shutdown()

    def test_plain_call(self):
        self.assertEqual(self.ex.submit(add, 2, 3).result(timeout=60), PPE.submit(add, 2, 3).result())
        self.assertEqual(self.ex.submit(add, a="x", b="y").result(timeout=60), "xy")
        self.assertEqual(self.ex.submit(pow, 2, 100).result(timeout=60), 2 ** 100)

    def test_map(self):
        self.assertEqual(list(self.ex.map(square, range(300), timeout=120)), list(PPE.map(square, range(300))))
        self.assertEqual(list(self.ex.map(add, "abc", "xyz")), ["ax", "by", "cz"])

    def test_raising_function(self):
        with self.assertRaises(CustomError) as local:
            PPE.submit(raiser, 7).result()
        with self.assertRaises(CustomError) as remote:
            self.ex.submit(raiser, 7).result(timeout=60)
        self.assertIs(type(remote.exception), type(local.exception))
        self.assertEqual(remote.exception.args, local.exception.args)
        cause = remote.exception.__cause__
        self.assertIsInstance(cause, RemoteTraceback)
        # The remote traceback names the frames where it happened, like the local pool's.
        for frame in ("in raiser", "in _raise_inner", 'raise CustomError(f"bad {n}")', "CustomError: bad 7"):
            self.assertIn(frame, str(cause))
            self.assertIn(frame, str(local.exception.__cause__))
        self.assertNotIn("python_worker.py", str(cause))
        self.assertNotIn("switchyard-worker", str(cause))
        # A builtin exception too.
        with self.assertRaises(ZeroDivisionError):
            self.ex.submit(divmod, 1, 0).result(timeout=60)

    def test_closure(self):
        f = make_adder(10)
        self.assertEqual(self.ex.submit(f, 5).result(timeout=60), f(5))
        # The local pool cannot send a closure at all; here it runs as it does locally.
        with self.assertRaises(Exception):
            PPE.submit(f, 5).result()
        counter = [0]

        def bump(k):
            counter[0] += k
            return counter[0]
        self.assertEqual(self.ex.submit(bump, 3).result(timeout=60), 3)
        self.assertEqual(counter, [0], "the remote call must not change the caller's state")

    def test_bound_method_sees_its_object_now(self):
        box = Box(1)
        method = box.get
        self.assertEqual(self.ex.submit(method).result(timeout=60), 1)
        box.value = 2
        self.assertEqual(self.ex.submit(method).result(timeout=60), 2, "a method is sent with its object as it is now")

    def test_lambda(self):
        g = lambda x, y=2: x ** y + 1  # noqa: E731
        self.assertEqual(self.ex.submit(g, 3).result(timeout=60), g(3))
        self.assertEqual(list(self.ex.map(lambda s: s.upper(), ["a", "b"])), ["A", "B"])

    def test_10mb_argument(self):
        data = os.urandom(MB10)
        self.assertEqual(self.ex.submit(size_and_digest, data).result(timeout=120), PPE.submit(size_and_digest, data).result())

    def test_largest_argument(self):
        from switchyard import MAX_PAYLOAD_BYTES
        data = b"a" * (MAX_PAYLOAD_BYTES - 4096)
        self.assertEqual(self.ex.submit(size_and_digest, data).result(timeout=120), size_and_digest(data))
        with self.assertRaises(ValueError) as cm:
            self.ex.submit(size_and_digest, data + b"a" * 8192)
        self.assertIn("the limit is", str(cm.exception))

    def test_10mb_result(self):
        got = self.ex.submit(make_big, MB10).result(timeout=120)
        self.assertEqual(len(got), MB10)
        self.assertEqual(got, PPE.submit(make_big, MB10).result())

    def test_worker_that_dies_fails_only_its_task(self):
        slow = [self.ex.submit(sleep_then, i, 0.2) for i in range(4)]
        bad = self.ex.submit(die, 3)
        after = [self.ex.submit(add, i, 1) for i in range(6)]
        with self.assertRaises(TaskFailed) as cm:
            bad.result(timeout=60)
        self.assertIn("died while running this task", str(cm.exception))
        self.assertIn("exit status 3", str(cm.exception))
        self.assertEqual([f.result(timeout=60) for f in slow], [0, 1, 2, 3])
        self.assertEqual([f.result(timeout=60) for f in after], [1, 2, 3, 4, 5, 6])
        self.assertEqual(self.ex.submit(add, 20, 22).result(timeout=60), 42)

    def test_requests_are_batched(self):
        before = dict(self.ex.stats)
        n = 500
        self.assertEqual([f.result(timeout=120) for f in [self.ex.submit(add, i, 0) for i in range(n)]], list(range(n)))
        submits = self.ex.stats["submit_requests"] - before["submit_requests"]
        polls = self.ex.stats["status_requests"] - before["status_requests"]
        self.assertLessEqual(submits, n // 10, f"{submits} submit requests for {n} calls")
        self.assertLessEqual(polls, n // 4, f"{polls} status requests for {n} calls")
        self.assertLessEqual(threading.active_count(), 10, "no thread per future")

    def test_each_task_is_read_once(self):
        # Slow tasks first: a poller asking about every task out would ask
        # about them again and again while the quick ones run.
        n, slow = 5000, 4
        with executor() as ex:
            futs = [ex.submit(sleep_then, -i, 0.5) for i in range(1, slow + 1)]
            futs += [ex.submit(add, i, 0) for i in range(n)]
            self.assertEqual([f.result(timeout=300) for f in futs], list(range(-1, -slow - 1, -1)) + list(range(n)))
            stats = dict(ex.stats)
        total = n + slow
        self.assertEqual(stats["tasks"], total)
        self.assertEqual(stats["resets"], 0)
        self.assertLessEqual(stats["ids_fetched"], total + 10, stats)
        self.assertLessEqual(stats["status_requests"], total // 10, stats)

    def test_reset_rereads_outstanding_tasks(self):
        with executor() as ex:
            ex._cursor = "000000000000-0"  # another run's cursor: the forwarder answers reset
            futs = [ex.submit(sleep_then, i, 0.3) for i in range(4)] + [ex.submit(add, i, 1) for i in range(200)]
            self.assertEqual([f.result(timeout=120) for f in futs], list(range(4)) + list(range(1, 201)))
            self.assertEqual(ex.stats["resets"], 1)
            self.assertNotEqual(ex._cursor, "000000000000-0")
            # After the reset it goes on from the new cursor.
            self.assertEqual(ex.submit(add, 20, 22).result(timeout=60), 42)
            self.assertEqual(ex.stats["resets"], 1)

    def test_reset_finds_tasks_that_ended_before_it(self):
        # Hold the executor's lock while its submit is out, so that the task
        # ends before the poller first asks: only the reread can find it.
        for attempt in range(5):
            ex = executor()
            try:
                ex._cursor = "000000000000-0"
                _, page = http("GET", f"{ENDPOINT.url}/v1/tasks/ended", token=ENDPOINT.token)
                fut = ex.submit(add, 40, 2)
                ex._pcv.acquire()
                try:
                    while not ex._inflight and not ex._outstanding and not fut.done():
                        ex._pcv.release()
                        ex._pcv.acquire()
                    caught = ex._inflight
                    if caught:
                        after = page["cursor"]

                        def ended():
                            _, p = http("GET", f"{ENDPOINT.url}/v1/tasks/ended?after={after}", token=ENDPOINT.token)
                            return len(p["tasks"]) >= 1
                        wait_for(ended, 30, "the task ended at the forwarder")
                finally:
                    ex._pcv.release()
                self.assertEqual(fut.result(timeout=60), 42)
                if caught:
                    self.assertEqual(ex.stats["resets"], 1)
                    self.assertEqual(ex.stats["ids_fetched"], 1, "the reread completed it; no end came after")
                    return
            finally:
                ex.shutdown(wait=False, cancel_futures=True)
        self.fail("the submit was never caught in flight")

    def test_shutdown_cancel_futures_cancels_at_the_endpoint(self):
        ex = executor()
        futs = [ex.submit(sleep_then, i, 60) for i in range(3)]
        wait_for(lambda: all(hasattr(f, "task_id") for f in futs), 30, "the tasks accepted")
        ex.shutdown(wait=True, cancel_futures=True)
        self.assertTrue(all(f.cancelled() for f in futs))
        self.assertFalse(ex._poller.is_alive())
        for f in futs:
            wait_for(lambda: http("GET", f"{ENDPOINT.url}/v1/tasks/{f.task_id}", token=ENDPOINT.token)[1]["state"] == "cancelled",
                     30, "the task cancelled at the forwarder")
        self.assertEqual(self.ex.submit(add, 1, 2).result(timeout=60), 3)

    def test_cancel_reaches_the_endpoint(self):
        f = self.ex.submit(sleep_then, 1, 60)
        wait_for(lambda: hasattr(f, "task_id"), 30, "the task accepted")
        wait_for(lambda: http("GET", f"{ENDPOINT.url}/v1/tasks/{f.task_id}", token=ENDPOINT.token)[1]["state"] == "running",
                 30, "the task running")
        self.assertTrue(f.cancel())
        wait_for(lambda: http("GET", f"{ENDPOINT.url}/v1/tasks/{f.task_id}", token=ENDPOINT.token)[1]["state"] == "cancelled",
                 30, "the task cancelled at the forwarder")
        self.assertEqual(self.ex.submit(add, 1, 2).result(timeout=60), 3)

    def test_task_timeout(self):
        with executor(task_timeout=0.5) as ex:
            with self.assertRaises(TaskFailed) as cm:
                ex.submit(sleep_then, 1, 60).result(timeout=60)
            self.assertIn("timed out after 500ms", str(cm.exception))
            self.assertEqual(ex.submit(add, 1, 1).result(timeout=60), 2)

    def test_shutdown_waits_and_refuses_new_calls(self):
        ex = executor()
        futs = [ex.submit(sleep_then, i, 0.05) for i in range(5)]
        ex.shutdown(wait=True)
        self.assertTrue(all(f.done() for f in futs))
        self.assertEqual([f.result() for f in futs], list(range(5)))
        with self.assertRaises(RuntimeError):
            ex.submit(add, 1, 2)

    def test_unknown_endpoint(self):
        with self.assertRaises(UnknownEndpointError) as cm:
            Executor(endpoint="no-such-endpoint", url=ENDPOINT.url, token=ENDPOINT.token)
        msg = str(cm.exception)
        self.assertIn("'no-such-endpoint'", msg)
        self.assertIn(EP, msg, "the error names the endpoints that exist")

    def test_forwarder_unreachable(self):
        from switchyard import SwitchyardError
        with self.assertRaises(SwitchyardError) as cm:
            Executor(endpoint=EP, url="http://127.0.0.1:1")
        self.assertIn("cannot reach the forwarder at http://127.0.0.1:1", str(cm.exception))

    def test_bad_token_at_a_secure_forwarder(self):
        if not ENDPOINT.token:
            self.assertIsNone(ENDPOINT.token)  # this build has no tokens; TokenTest covers the client side
            return
        with self.assertRaises(AuthenticationError) as cm:
            Executor(endpoint=EP, url=ENDPOINT.url, token="not-a-token")
        self.assertIn("401", str(cm.exception))


class TokenTest(unittest.TestCase):
    """The client side of tokens, against a stand-in that answers as the
    contract says a forwarder does (docs/contract.md, Security): 401 with a JSON
    error unless the request carries "Authorization: Bearer good"."""

    def setUp(self):
        self.seen = []
        seen = self.seen

        class Handler(httpserver.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                seen.append(("GET", self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != "Bearer good":
                    return self.answer(401, {"error": "missing or invalid token"})
                if self.path == "/v1/tasks/ended":
                    return self.answer(200, {"cursor": "a1b2c3-0", "tasks": [], "more": False})
                self.answer(200, {"endpoint_id": "x", "connected": True})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(("POST", self.path, self.headers.get("Authorization")))
                self.answer(401, {"error": "token revoked"})

        self.server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def test_bad_token(self):
        with self.assertRaises(AuthenticationError) as cm:
            Executor(endpoint="x", url=self.url, token="bad")
        self.assertIn("HTTP 401", str(cm.exception))
        self.assertIn("SWITCHYARD_TOKEN", str(cm.exception))
        self.assertEqual(self.seen[-1][2], "Bearer bad")

    def test_environment_and_a_token_refused_later(self):
        env = {"SWITCHYARD_API": self.url, "SWITCHYARD_TOKEN": "good"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            ex = Executor(endpoint="x")
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k)
                else:
                    os.environ[k] = v
        with ex:
            with self.assertRaises(AuthenticationError) as cm:
                ex.submit(add, 1, 2).result(timeout=30)
        self.assertIn("token revoked", str(cm.exception))
        self.assertTrue(all(auth == "Bearer good" for _, _, auth in self.seen), self.seen)
        self.assertIn(("POST", "/v1/endpoints/x/tasks", "Bearer good"), self.seen)


if __name__ == "__main__":
    unittest.main()

"""The manager's Python worker (manager/python_worker.py) driven over its
pipes as a manager drives it (docs/worker-protocol.md), protocol 4: calls
sent before the previous answers came.

    PYTHONPATH=python /usr/bin/python3 -m unittest python/tests/test_worker_protocol.py -v
"""
import importlib.util
import os
import pickle
import random
import select
import struct
import subprocess
import sys
import threading
import unittest
import zlib

import cloudpickle

# The worker cannot import this module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "manager", "python_worker.py")
HEADER = struct.Struct(">IB")
# Puts the pipes on fds 4 and 5 and runs the worker, as the manager does.
LAUNCH = """import fcntl, os, sys
a, b = (fcntl.fcntl(int(x), fcntl.F_DUPFD, 10) for x in sys.argv[1:3])
os.dup2(a, 4)
os.dup2(b, 5)
os.execv(sys.executable, [sys.executable, "-B", "-s", sys.argv[3], "10000000"])
"""
# A hang is a failure, not a wait: no answer is this slow.
STUCK = 60


class _Ref:
    """A function serialized once, as the SDK sends it."""

    def __init__(self, fn):
        self.data = zlib.compress(cloudpickle.dumps(fn))

    def __reduce__(self):
        return pickle.loads, (_Z(self.data),)


class _Z:
    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return zlib.decompress, (self.data,)


def frame(kind, body):
    return HEADER.pack(len(body), ord(kind)) + body


def call(call_id, fn, *args):
    return frame("C", struct.pack(">Q", call_id) + pickle.dumps((fn, args, {}), 5))


class Worker:
    def __init__(self, extra_fds=()):
        calls_r, self.calls = os.pipe()
        self.answers, ans_w = os.pipe()
        keep = (calls_r, ans_w) + tuple(extra_fds)
        self.p = subprocess.Popen([sys.executable, "-c", LAUNCH, str(calls_r), str(ans_w), WORKER], pass_fds=keep)
        os.close(calls_r)
        os.close(ans_w)
        self.buf = b""
        kind, body = self.read()
        assert kind == "H", (kind, body)
        self.hello = body

    def write(self, data):
        os.write(self.calls, data)

    def read(self):
        while True:
            if len(self.buf) >= HEADER.size:
                n, kind = HEADER.unpack_from(self.buf)
                if len(self.buf) >= HEADER.size + n:
                    body = self.buf[HEADER.size:HEADER.size + n]
                    self.buf = self.buf[HEADER.size + n:]
                    return chr(kind), body
            r, _, _ = select.select([self.answers], [], [], STUCK)
            if not r:
                raise AssertionError("the worker did not answer")
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                raise AssertionError("the worker closed its answer pipe")
            self.buf += chunk

    def answer(self, want_id):
        kind, body = self.read()
        got = struct.unpack_from(">Q", body)[0]
        if got != want_id:
            raise AssertionError(f"answer to call {got}, want {want_id}")
        if kind == "R":
            n = struct.unpack_from(">I", body, 8)[0]
            return pickle.loads(body[12 + n:])
        if kind == "X":
            m = struct.unpack_from(">I", body, 8)[0]
            n = struct.unpack_from(">I", body, 12 + m)[0]
            return pickle.loads(body[16 + m + n:])
        raise AssertionError(f"frame {kind!r}")

    def close(self):
        os.close(self.calls)
        self.p.wait(STUCK)
        os.close(self.answers)


def double(x):
    return 2 * x


def fail(x):
    raise ValueError(f"bad {x}")


def wait_on(fd):
    return os.read(fd, 1)


class WorkerProtocolTest(unittest.TestCase):
    def setUp(self):
        self.w = Worker()
        self.addCleanup(lambda: self.w.close())

    def test_hello_announces_protocol_4(self):
        self.assertIn(b'"protocol": 4', self.w.hello)

    def test_calls_sent_ahead_are_answered_in_order(self):
        d, f = _Ref(double), _Ref(fail)
        calls = [(i, f if i % 7 == 3 else d) for i in range(1, 41)]
        self.w.write(b"".join(call(i, fn, i) for i, fn in calls))
        for i, fn in calls:
            got = self.w.answer(i)
            if fn is f:
                self.assertEqual(got[0], "err")
                self.assertEqual(str(got[1]), f"bad {i}")
            else:
                self.assertEqual(got, ("ok", 2 * i))
        # Still serves one call at a time, as protocol 3 did.
        self.w.write(call(99, d, 5))
        self.assertEqual(self.w.answer(99), ("ok", 10))

    def test_answers_are_not_held_behind_a_call_not_known_short(self):
        release_r, release_w = os.pipe()
        self.w.close()
        w = self.w = Worker(extra_fds=(release_r,))
        d = _Ref(double)
        w.write(call(1, d, 1))  # double is now known to be short
        self.assertEqual(w.answer(1), ("ok", 2))
        # wait_on blocks until released: the answer to call 2 must come
        # before, or this read never ends.
        w.write(call(2, d, 2) + call(3, _Ref(wait_on), release_r))
        self.assertEqual(w.answer(2), ("ok", 4))
        os.write(release_w, b"x")
        self.assertEqual(w.answer(3), ("ok", b"x"))
        os.close(release_r)
        os.close(release_w)


class SDKCallTest(unittest.TestCase):
    """The SDK's calls with plain arguments, built from kept opcodes, are
    the calls pickle would make, and the worker runs them."""

    def test_built_calls(self):
        from switchyard.executor import _Serialized
        ref = _Serialized(cloudpickle.dumps(echo))
        cases = [(), (1,), (-(10 ** 30), 2.5, None, True, False), ("é" * 10, "s" * 70000, "s" * 70000),
                 (b"", b"x" * 200000)]
        w = Worker()
        self.addCleanup(w.close)
        for i, args in enumerate(cases):
            data = ref.call(args)
            fn, a, kw = pickle.loads(data)
            self.assertEqual((a, kw), (args, {}))
            self.assertEqual(fn(*a), args)
            w.write(frame("C", struct.pack(">Q", i) + data))
            self.assertEqual(w.answer(i), ("ok", args))


def echo(*args):
    return args


class CallReaderTest(unittest.TestCase):
    """The worker's frame reader against every way a stream can be cut
    into reads (a seeded random search, run each time)."""

    def test_frames_survive_any_split(self):
        spec = importlib.util.spec_from_file_location("python_worker", WORKER)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        rnd = random.Random(4)
        for _ in range(200):
            frames = [(rnd.choice(b"CX"), rnd.randbytes(rnd.choice((0, 1, 8, 100, 70000))))
                      for _ in range(rnd.randint(1, 6))]
            data = b"".join(HEADER.pack(len(b), k) + b for k, b in frames)
            cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 8))))
            r, wfd = os.pipe()

            def feed():
                last = 0
                for c in cuts + [len(data)]:
                    os.write(wfd, data[last:c])
                    last = c
                os.close(wfd)

            t = threading.Thread(target=feed)
            t.start()
            reader = mod._Calls(r)
            got = []
            while True:
                f = reader.next()
                if f is None:
                    break
                got.append((f[0], bytes(f[1])))
            t.join()
            os.close(r)
            self.assertEqual(got, frames)


if __name__ == "__main__":
    unittest.main()

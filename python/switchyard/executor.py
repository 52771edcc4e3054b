"""Executor: a concurrent.futures.Executor that runs calls on a Switchyard endpoint."""
import base64
import concurrent.futures
import itertools
import json
import os
import pickle
import threading
import time
import types
import weakref
import zlib

import urllib.parse

import cloudpickle

from ._transport import Connection
from .errors import (APIError, AuthenticationError, RemoteTraceback, SwitchyardError, TaskCancelled,
                     TaskFailed, UnknownEndpointError)

# A serialized call may be this large (the forwarder's limit for python
# tasks; a result may be 10 MiB less 5 KiB).
MAX_PAYLOAD_BYTES = 12 << 20
# One submit request carries at most this much base64; the forwarder takes
# bodies of up to 64 MiB.
MAX_BATCH_BYTES = 16 << 20
DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset(("success", "failed", "cancelled", "unknown"))

# How the poller paces itself: it asks again after MIN_POLL while results
# come in and backs off gently (a round trip takes about a millisecond) to
# poll_interval while none do.
MIN_POLL = 0.0005
POLL_BACKOFF = 1.1
# With many tasks out it waits longer (up to MAX_MIN_POLL) so that each
# answer carries many results, and it slows down while answers bring fewer
# than POLL_WANT: one request per task would cost more than the tasks.
POLL_PER_TASK = MIN_POLL / 32
MAX_MIN_POLL = 0.01
POLL_WANT = 8
# It asks about the oldest outstanding tasks (they finish first) in a
# window that grows while every one asked about has ended, plus a rotating
# slice of the rest, so a quick task behind slow ones is found too.
MIN_WINDOW, MAX_WINDOW = 32, 4096
# A submit waits this long for the next one before its batch goes out.
QUIET_GAP = 0.0005
# Arguments of these types pickle the same with pickle as with cloudpickle,
# and pickle is several times faster.
PLAIN = frozenset((int, float, str, bytes, bool, type(None)))


class _Serialized:
    """A function serialized once: it pickles as a call to pickle.loads of
    its compressed bytes, so the worker unpickles (fn, args, kwargs) as
    usual. Compressed, every task carries a third fewer bytes."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = _Compressed(zlib.compress(data, 6))

    def __reduce__(self):
        return pickle.loads, (self.data,)


class _Compressed:
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return zlib.decompress, (self.data,)


class Executor(concurrent.futures.Executor):
    """Runs calls on a Switchyard endpoint's Python workers.

    endpoint       the endpoint id tasks go to ("local" is `switchyard endpoint up`'s)
    url            the forwarder's HTTP API; default $SWITCHYARD_API, else http://127.0.0.1:8080
    token          sent as "Authorization: Bearer TOKEN"; default $SWITCHYARD_TOKEN
    batch_size     most calls sent in one request
    batch_window   longest time (s) a call waits for others to share its request
    poll_interval  longest pause (s) between two status requests while tasks are out
    task_timeout   seconds a call may run before the manager stops it (None: no limit)

    A background thread sends submitted calls in batches; one poller thread
    asks for the state of every outstanding task in batched status requests.
    A call is serialized with cloudpickle as (fn, args, kwargs); an exception
    it raises is raised again by Future.result() with the remote traceback as
    its __cause__.

    Each function object is serialized once, at its first submit (as Parsl
    does): a global it reads is sent as it was then. Arguments, bound
    methods and other callables are serialized at every submit.
    """

    def __init__(self, endpoint="local", url=None, token=None, batch_size=1000, batch_window=0.005,
                 poll_interval=0.05, task_timeout=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.endpoint = endpoint
        self.url = (url or os.environ.get("SWITCHYARD_API") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("SWITCHYARD_TOKEN")
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = "Bearer " + token.strip()
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.poll_interval = poll_interval
        self._task_extra = ""
        if task_timeout is not None:
            if task_timeout <= 0:
                raise ValueError(f"task_timeout must be positive seconds, got {task_timeout}")
            self._task_extra = ',"timeout":"%dms"' % max(1, round(task_timeout * 1000))
        self._endpoint_path = f"/v1/endpoints/{urllib.parse.quote(endpoint, safe='')}"
        self._submit_path = self._endpoint_path + "/tasks"
        # Functions serialized once each, like Parsl does: pickling a
        # function by value costs far more than the rest of a call.
        self._functions = weakref.WeakKeyDictionary()

        self._check_endpoint()

        # Calls not yet sent, under _cv.
        self._cv = threading.Condition()
        self._queue = []
        self._shutdown = False
        # Tasks sent and not ended (task id -> future, oldest first), under _pcv.
        self._pcv = threading.Condition()
        self._outstanding = {}
        self._sender_exited = False
        self._poll_now = False
        # Requests made, for the curious and for tests: batching keeps them
        # far below one per task.
        self.stats = {"tasks": 0, "submit_requests": 0, "status_requests": 0, "cancel_requests": 0}
        self._sender = threading.Thread(target=self._send_loop, name="switchyard-sender", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="switchyard-poller", daemon=True)
        self._sender.start()
        self._poller.start()

    def __repr__(self):
        return f"<switchyard.Executor endpoint={self.endpoint!r} url={self.url!r}>"

    # --- the Executor interface

    def submit(self, fn, /, *args, **kwargs):
        """Send fn(*args, **kwargs) to the endpoint and return its Future."""
        payload = self._serialize(fn, args, kwargs)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"the call serializes to {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES} "
                             "(pass large data by reference, e.g. a path on a shared filesystem)")
        item = '{"kind":"python","payload":"%s"%s}' % (base64.b64encode(payload).decode("ascii"),
                                                         self._task_extra)
        fut = concurrent.futures.Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append((fut, item))
            n = len(self._queue)
            if n == 1 or n >= self.batch_size:
                self._cv.notify()
        return fut

    def _serialize(self, fn, args, kwargs):
        """cloudpickle of (fn, args, kwargs), with fn serialized once."""
        if type(fn) is not types.FunctionType:
            # A bound method carries its object, whose state may change
            # between calls; a builtin pickles cheaply by name.
            return cloudpickle.dumps((fn, args, kwargs))
        ref = self._functions.get(fn)
        if ref is None:
            ref = self._functions[fn] = _Serialized(cloudpickle.dumps(fn))
        if not kwargs and all(type(a) in PLAIN for a in args):
            return pickle.dumps((ref, args, kwargs), protocol=5)
        return cloudpickle.dumps((ref, args, kwargs))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stop taking calls. With wait, return once every future is done."""
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for fut, _ in self._queue:
                    fut.cancel()
            self._cv.notify_all()
        if cancel_futures:
            with self._pcv:
                for fut in self._outstanding.values():
                    fut.cancel()  # the poller cancels them at the forwarder
        with self._pcv:
            self._pcv.notify_all()
        if wait:
            self._sender.join()
            self._poller.join()

    # --- HTTP

    def _connect(self):
        return Connection(self.url, self._headers)

    def _request(self, conn, method, path, body=None, expect=200):
        """One API call; returns the decoded JSON or raises an APIError."""
        status, data = conn.request(method, path, body)
        if status == expect:
            return json.loads(data)
        text = data.decode("utf-8", "replace").strip()
        try:
            msg = json.loads(text).get("error") or text
        except (ValueError, AttributeError):
            msg = text
        msg = msg[:2000]
        if status == 401:
            raise AuthenticationError(f"the forwarder at {self.url} refused the token (HTTP 401): {msg}; "
                                      "set SWITCHYARD_TOKEN or token= to a valid token", 401)
        if status == 403:
            raise AuthenticationError(f"the token may not do this (HTTP 403): {msg}", 403)
        if status == 404 and method == "POST" and path == self._submit_path:
            raise UnknownEndpointError(f"endpoint {self.endpoint!r} is unknown to the forwarder at {self.url} "
                                       f"(HTTP 404): {msg}", 404)
        raise APIError(f"{method} {self.url}{path}: HTTP {status}: {msg}", status)

    def _check_endpoint(self):
        """Fail at once on an unknown endpoint or a refused token."""
        conn = self._connect()
        try:
            try:
                self._request(conn, "GET", self._endpoint_path)
            except APIError as e:
                if e.status != 404:
                    raise
                known = ""
                try:
                    eps = self._request(conn, "GET", "/v1/endpoints").get("endpoints") or []
                    known = ", ".join(sorted(str(ep.get("endpoint_id")) for ep in eps)) or "none"
                    known = f"; known endpoints: {known}"
                except SwitchyardError:
                    pass
                raise UnknownEndpointError(f"endpoint {self.endpoint!r} is unknown to the forwarder at "
                                           f"{self.url}{known}", 404) from None
        finally:
            conn.close()

    # --- sender thread

    def _send_loop(self):
        session = self._connect()
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._send(session, batch)
        finally:
            session.close()
            with self._pcv:
                self._sender_exited = True
                self._pcv.notify_all()

    def _next_batch(self):
        """Waits for calls and returns a batch of them; None once shut down
        with nothing left."""
        cv = self._cv
        with cv:
            while not self._queue:
                if self._shutdown:
                    return None
                cv.wait()
            # A lone call on an idle executor goes at once (a round trip
            # should not wait); otherwise wait while calls keep coming.
            with self._pcv:
                idle = not self._outstanding
            if not (idle and len(self._queue) == 1):
                deadline = time.monotonic() + self.batch_window
                while len(self._queue) < self.batch_size and not self._shutdown:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    n = len(self._queue)
                    cv.wait(min(left, QUIET_GAP))
                    if len(self._queue) == n:
                        break
            size, k = 0, 0
            for k, (_, item) in enumerate(itertools.islice(self._queue, self.batch_size)):
                size += len(item) + 1
                if k > 0 and size > MAX_BATCH_BYTES:
                    break
            else:
                k += 1
            batch = self._queue[:k]
            del self._queue[:k]
            return batch

    def _send(self, session, batch):
        batch = [(f, item) for f, item in batch if not f.cancelled()]
        if not batch:
            return
        body = ('{"tasks":[' + ",".join(item for _, item in batch) + "]}").encode("ascii")
        delay = 0.1
        for attempt in range(6):
            try:
                self.stats["submit_requests"] += 1
                ids = self._request(session, "POST", self._submit_path, body, expect=202)["task_ids"]
                break
            except (APIError, SwitchyardError) as e:
                # Refused outright: every call of the batch fails with the reason.
                retry = not isinstance(e, APIError) or e.status in (502, 503, 504)
                if not retry or attempt == 5:
                    for f, _ in batch:
                        if f.set_running_or_notify_cancel():
                            f.set_exception(e)
                    return
                time.sleep(delay)
                delay *= 2
        if len(ids) != len(batch):
            err = APIError(f"the forwarder answered {len(ids)} task ids for {len(batch)} tasks")
            for f, _ in batch:
                if f.set_running_or_notify_cancel():
                    f.set_exception(err)
            return
        self.stats["tasks"] += len(ids)
        with self._pcv:
            was_idle = not self._outstanding
            out = self._outstanding
            for (f, _), tid in zip(batch, ids):
                f.task_id = tid
                out[tid] = f
            self._poll_now = True
            if was_idle:
                self._pcv.notify()

    # --- poller thread

    def _poll_loop(self):
        session = self._connect()
        window, cursor, interval = MIN_WINDOW, 0, MIN_POLL
        try:
            while True:
                with self._pcv:
                    while not self._outstanding:
                        if self._sender_exited:
                            return
                        self._pcv.wait()
                    floor = min(MAX_MIN_POLL, MIN_POLL + POLL_PER_TASK * len(self._outstanding))
                    if self._poll_now:
                        # New tasks: ask about them soon.
                        self._poll_now = False
                        interval = floor
                    self._pcv.wait(max(interval, floor))
                    out = self._outstanding
                    want = min(POLL_WANT, len(out))
                    ids, cancel = [], []
                    for tid, f in itertools.islice(out.items(), window):
                        (cancel if f.cancelled() else ids).append(tid)
                    rest = len(out) - window
                    if rest > 0:
                        cursor %= rest
                        extra = max(MIN_WINDOW, window // 2)
                        for tid, f in itertools.islice(out.items(), window + cursor, window + cursor + extra):
                            (cancel if f.cancelled() else ids).append(tid)
                        cursor += extra
                    for tid in cancel:
                        del out[tid]
                if cancel:
                    self._cancel_remote(session, cancel)
                if not ids:
                    continue
                self.stats["status_requests"] += 1
                self.stats["ids_polled"] = self.stats.get("ids_polled", 0) + len(ids)
                try:
                    views = self._request(session, "POST", "/v1/tasks/status",
                                          ('{"task_ids":["' + '","'.join(ids) + '"]}').encode("ascii"))["tasks"]
                except SwitchyardError as e:
                    if isinstance(e, AuthenticationError):
                        self._fail_all(e)
                    interval = self.poll_interval
                    continue
                done = [v for v in views if v.get("state") in TERMINAL]
                if done:
                    with self._pcv:
                        futs = [self._outstanding.pop(v["task_id"], None) for v in done]
                    for f, v in zip(futs, done):
                        if f is not None:
                            _complete(f, v)
                    if len(done) >= want:
                        interval /= 2
                    else:
                        interval = min(max(interval, MIN_POLL) * POLL_BACKOFF, self.poll_interval)
                else:
                    interval = min(max(interval, MIN_POLL) * POLL_BACKOFF, self.poll_interval)
                head = min(window, len(ids))
                window = max(MIN_WINDOW, min(MAX_WINDOW, 2 * len(done), 2 * window if len(done) >= head else window))
        finally:
            session.close()

    def _fail_all(self, err):
        with self._pcv:
            futs = list(self._outstanding.values())
            self._outstanding.clear()
        for f in futs:
            if f.set_running_or_notify_cancel():
                f.set_exception(err)

    def _cancel_remote(self, session, ids):
        self.stats["cancel_requests"] += 1
        try:
            self._request(session, "POST", "/v1/tasks/cancel",
                          ('{"task_ids":["' + '","'.join(ids) + '"]}').encode("ascii"))
        except SwitchyardError:
            pass  # the future is cancelled here either way


def _complete(f, view):
    """Ends a future from a terminal task view."""
    if not f.set_running_or_notify_cancel():
        return
    state = view.get("state")
    result = view.get("result")
    payload = result.get("payload") if isinstance(result, dict) else None
    if payload is not None and state in ("success", "failed"):
        try:
            out = pickle.loads(base64.b64decode(payload))
        except Exception as e:  # noqa: BLE001 - e.g. a class this process cannot import
            f.set_exception(TaskFailed(view.get("task_id"), state, f"its result could not be deserialized: {e!r}"))
            return
        if out[0] == "ok":
            f.set_result(out[1])
            return
        exc, tb = out[1], out[2]
        if tb:
            exc.__cause__ = RemoteTraceback(tb)
        f.set_exception(exc)
        return
    err = view.get("error") or "no result"
    if state == "cancelled":
        f.set_exception(TaskCancelled(view.get("task_id"), state, err))
    else:
        f.set_exception(TaskFailed(view.get("task_id"), state, err))


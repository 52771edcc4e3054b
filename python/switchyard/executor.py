"""Executor: a concurrent.futures.Executor that runs calls on a Switchyard endpoint."""
import base64
import concurrent.futures
import io
import itertools
import json
import os
import pickle
import threading
import time
import uuid
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

# The poller long-polls GET /v1/tasks/ended this long: a cancel, or
# shutdown(cancel_futures=True), is sent to the forwarder within it, and an
# idle wait costs one small request a second however many tasks are out.
ENDED_WAIT = 1.0
# Ends asked for in one page; task ids in one status request (each view
# carries its result).
ENDED_LIMIT = 10000
STATUS_BATCH = 1000
# Longest pause between tries while the forwarder fails.
RETRY_MAX = 2.0
# A submit waits this long for the next one before its batch goes out.
QUIET_GAP = 0.0005
# Arguments of these types pickle the same with pickle as with cloudpickle,
# and pickle is several times faster.
PLAIN = frozenset((int, float, str, bytes, bool, type(None)))


class _Serialized:
    """A function serialized once: it pickles as a call to pickle.loads of
    its compressed bytes, so the worker unpickles (fn, args, kwargs) as
    usual. Compressed, every task carries a third fewer bytes."""

    __slots__ = ("data", "ops")

    def __init__(self, data):
        self.data = _Compressed(zlib.compress(data, 6))
        self.ops = _ops(pickle.dumps(self, 3))

    def __reduce__(self):
        return pickle.loads, (self.data,)

    def call(self, args):
        """The pickle of (self, args, {}) for args of PLAIN values, built
        from self's pickle opcodes kept from the first time: a fraction of
        the time of pickling it all again. The pieces are protocol 3
        opcodes, which have no frames, so they join; the args are pickled
        without a memo, so no memo index of theirs can clash with self's.
        The whole goes in one protocol 5 frame: the worker's unpickler then
        reads it at once, not opcode by opcode."""
        if args:
            f = io.BytesIO()
            p = pickle.Pickler(f, 3)
            p.fast = True
            p.dump(args)
            a = _ops(f.getvalue())
        else:
            a = b")"  # EMPTY_TUPLE
        ops = self.ops + a + b"}\x87."  # EMPTY_DICT, TUPLE3, STOP
        return b"\x80\x05\x95" + len(ops).to_bytes(8, "little") + ops  # PROTO 5, FRAME


def _ops(p):
    """A protocol 3 pickle's opcodes without its PROTO and STOP."""
    return p[2:-1]


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
    poll_interval  first pause (s) after a failed request of the poller; it doubles up to 2 s
    task_timeout   seconds a call may run before the manager stops it (None: no limit)

    A background thread sends submitted calls in batches; one poller thread
    follows the ends of this token's tasks (GET /v1/tasks/ended, from a
    cursor taken before the first submit) and reads the records of those
    that are ours in batched status requests, so each task is read once
    however many are out.
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

        conn = self._connect()
        try:
            self._check_endpoint(conn)
            # Every end of a task submitted from now on follows this cursor.
            self._cursor = self._request(conn, "GET", "/v1/tasks/ended")["cursor"]
        finally:
            conn.close()

        # Calls not yet sent, under _cv.
        self._cv = threading.Condition()
        self._queue = []
        self._shutdown = False
        # Under _pcv: tasks sent and not ended (task id -> future); ids of
        # futures cancelled here, for the poller to cancel at the forwarder.
        self._pcv = threading.Condition()
        self._outstanding = {}
        self._cancels = []
        self._sender_exited = False
        # A submit's tasks may end before its answer names them: while one
        # is in flight the poller keeps the ended ids it cannot place
        # (_early), or, when it reread everything, says so (_early_all),
        # and the sender reads those of its tasks once it knows their ids.
        self._inflight = False
        self._early = set()
        self._early_all = False
        # Set when reading such tasks failed: the poller rereads every
        # outstanding task from a fresh cursor.
        self._resync = False
        # Requests made and task ids read, for the curious and for tests:
        # batching keeps requests far below one per task, and a task is
        # read about once.
        self._stats_lock = threading.Lock()
        self.stats = {"tasks": 0, "submit_requests": 0, "ended_requests": 0, "resets": 0, "status_requests": 0,
                      "ids_fetched": 0, "cancel_requests": 0}
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
            return ref.call(args)
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
                futs = list(self._outstanding.values())
            for fut in futs:
                fut.cancel()  # _on_done hands them to the poller to cancel at the forwarder
        with self._pcv:
            self._pcv.notify_all()
        if wait:
            self._sender.join()
            self._poller.join()

    # --- HTTP

    def _connect(self):
        return Connection(self.url, self._headers)

    def _request(self, conn, method, path, body=None, expect=200, headers=None):
        """One API call; returns the decoded JSON or raises an APIError."""
        status, data = conn.request(method, path, body, headers)
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

    def _check_endpoint(self, conn):
        """Fail at once on an unknown endpoint or a refused token."""
        try:
            self._request(conn, "GET", self._endpoint_path)
        except APIError as e:
            if e.status != 404:
                raise
            known = ""
            try:
                eps = self._request(conn, "GET", "/v1/endpoints").get("endpoints") or []
                known = ", ".join(sorted(str(ep.get("endpoint_id")) for ep in eps)) or "none"
                known = f"; endpoints you may use: {known}"
            except SwitchyardError:
                pass
            raise UnknownEndpointError(f"endpoint {self.endpoint!r} is unknown to the forwarder at "
                                       f"{self.url}{known}", 404) from None

    def _count(self, **kw):
        with self._stats_lock:
            for k, v in kw.items():
                self.stats[k] += v

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
        with self._pcv:
            self._inflight = True
        ids = None
        try:
            ids = self._submit(session, batch, body)
        finally:
            with self._pcv:
                self._inflight = False
                early, self._early = self._early, set()
                early_all, self._early_all = self._early_all, False
                if ids is not None:
                    out = self._outstanding
                    was_idle = not out
                    for (f, _), tid in zip(batch, ids):
                        f.task_id = tid
                        out[tid] = f
                    if was_idle:
                        self._pcv.notify_all()
        if ids is None:
            return
        self._count(tasks=len(ids))
        for f, _ in batch:
            # Runs at once for a future cancelled while the request was out.
            f.add_done_callback(self._on_done)
        check = ids if early_all else [tid for tid in ids if tid in early] if early else ()
        if check:
            try:
                self._fetch(session, check)
            except AuthenticationError as e:
                self._fail_all(e)
            except SwitchyardError:
                with self._pcv:
                    self._resync = True

    def _submit(self, session, batch, body):
        """POSTs a batch; returns its task ids, or None once its futures failed."""
        delay = 0.1
        # The same key on every try: a retry after a lost answer gets the
        # first try's ids instead of creating the tasks again.
        key = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(6):
            try:
                self._count(submit_requests=1)
                ids = self._request(session, "POST", self._submit_path, body, expect=202, headers=key)["task_ids"]
                break
            except (APIError, SwitchyardError) as e:
                # Refused outright: every call of the batch fails with the reason.
                retry = not isinstance(e, APIError) or e.status in (502, 503, 504)
                if not retry or attempt == 5:
                    for f, _ in batch:
                        if f.set_running_or_notify_cancel():
                            f.set_exception(e)
                    return None
                time.sleep(delay)
                delay *= 2
        if len(ids) != len(batch):
            err = APIError(f"the forwarder answered {len(ids)} task ids for {len(batch)} tasks")
            for f, _ in batch:
                if f.set_running_or_notify_cancel():
                    f.set_exception(err)
            return None
        return ids

    def _on_done(self, f):
        """A future cancelled here is no longer followed; the poller cancels
        its task at the forwarder."""
        if f.cancelled():
            with self._pcv:
                if self._outstanding.pop(f.task_id, None) is not None:
                    self._cancels.append(f.task_id)
                    self._pcv.notify_all()

    # --- poller thread

    def _poll_loop(self):
        session = self._connect()
        pause = 0.0
        try:
            while True:
                with self._pcv:
                    while not self._outstanding and not self._cancels:
                        if self._sender_exited:
                            return
                        self._pcv.wait()
                    cancels, self._cancels = self._cancels, []
                    resync, self._resync = self._resync, False
                if cancels:
                    self._cancel_remote(session, cancels)
                try:
                    if resync:
                        self._reread(session, self._request(session, "GET", "/v1/tasks/ended")["cursor"])
                        resync = False
                    self._follow_ends(session)
                    pause = 0.0
                except AuthenticationError as e:
                    self._fail_all(e)
                except SwitchyardError:
                    if resync:
                        with self._pcv:
                            self._resync = True
                    pause = min(max(2 * pause, self.poll_interval), RETRY_MAX)
                    with self._pcv:
                        self._pcv.wait(pause)
        finally:
            session.close()

    def _follow_ends(self, session):
        """Reads one page of ends after the cursor (waiting up to ENDED_WAIT
        for the first) and completes the futures of those that are ours."""
        with self._pcv:
            if not self._outstanding:
                return
        self._count(ended_requests=1)
        page = self._request(session, "GET", "/v1/tasks/ended?after=%s&wait=%dms&limit=%d" % (
            urllib.parse.quote(self._cursor, safe=""), ENDED_WAIT * 1000, ENDED_LIMIT))
        if page.get("reset"):
            # Ends before the new cursor are lost to us (the forwarder
            # restarted, or we fell behind its journal).
            self._count(resets=1)
            self._reread(session, page["cursor"])
            return
        ended = [t["task_id"] for t in page.get("tasks") or ()]
        with self._pcv:
            out = self._outstanding
            mine = [tid for tid in ended if tid in out]
            if self._inflight and len(mine) < len(ended):
                self._early.update(tid for tid in ended if tid not in out)
        if mine:
            self._fetch(session, mine)
        self._cursor = page["cursor"]

    def _reread(self, session, cursor):
        """Reads every outstanding task once, then follows ends from cursor
        (taken before the read, so no end falls between)."""
        with self._pcv:
            ids = list(self._outstanding)
            if self._inflight:
                self._early_all = True
        self._fetch(session, ids)
        self._cursor = cursor

    def _fetch(self, session, ids):
        """Reads the records of ids with batched status requests and
        completes the futures of those that ended."""
        for i in range(0, len(ids), STATUS_BATCH):
            chunk = ids[i:i + STATUS_BATCH]
            self._count(status_requests=1, ids_fetched=len(chunk))
            views = self._request(session, "POST", "/v1/tasks/status",
                                  ('{"task_ids":["' + '","'.join(chunk) + '"]}').encode("ascii"))["tasks"]
            done = [v for v in views if v.get("state") in TERMINAL]
            if not done:
                continue
            with self._pcv:
                futs = [self._outstanding.pop(v["task_id"], None) for v in done]
            for f, v in zip(futs, done):
                if f is not None:
                    _complete(f, v)

    def _fail_all(self, err):
        with self._pcv:
            futs = list(self._outstanding.values())
            self._outstanding.clear()
        for f in futs:
            if f.set_running_or_notify_cancel():
                f.set_exception(err)

    def _cancel_remote(self, session, ids):
        self._count(cancel_requests=1)
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


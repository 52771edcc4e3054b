"""Switchyard Python worker: runs serialized calls sent by a manager.

The manager embeds this program and hands it to the interpreter through a
pipe, so nothing on disk that a task could rewrite is ever loaded: it runs
`PYTHON -B -s -c BOOTSTRAP MAX_RESULT_BYTES`, and the bootstrap reads this
text from fd 3. One process serves one owner (the user who submitted the
calls) for its whole life. It speaks the framed protocol of
docs/worker-protocol.md, reading calls from fd 4 and writing answers to fd 5:

    frame = 4-byte big-endian body length, 1 type byte, body

    worker -> manager  'H' hello (JSON), once, after start-up
                       'F' fatal (UTF-8 text), then the worker exits
    manager -> worker  'C' call: 8-byte call id, cloudpickle of (fn, args, kwargs)
    worker -> manager  'R' return: the call's id, 4-byte length, UTF-8
                           text (repr of the value), cloudpickle of ("ok", value)
                       'X' exception: the call's id, 4-byte length, UTF-8
                           summary, 4-byte length, UTF-8 text (the
                           traceback's end), then cloudpickle of ("err",
                           exception, traceback_text)

Protocol 4: the manager may send calls before the earlier ones are
answered (only short ones, a few at a time); they run in order, and
answers are held to share a write only while the next call is already
here and its function was short last time.

fd 0 is /dev/null and fds 1 and 2 go to the manager's capture of the
worker's output, so a print() cannot reach the protocol; the ids let the
manager catch an answer that is not the one to its call.
"""
import io
import json
import os
import pickle
import reprlib
import signal
import struct
import sys
import traceback
import types
import zlib
from time import perf_counter

PROTOCOL = 4
# The readable text beside a result is for people (the web UI, `switchyard
# result`); the pickle stays the value. reprlib keeps repr() of a big value
# cheap; the manager caps the text again.
MAX_TEXT = 2048
_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 50
_repr.maxarray = 50
_repr.maxstring = _repr.maxlong = _repr.maxother = MAX_TEXT


def _text(s, tail=False):
    b = s.encode("utf-8", "replace")
    if len(b) <= MAX_TEXT:
        return b
    if tail:
        return b"..." + b[len(b) - MAX_TEXT + 3:]
    return b[:MAX_TEXT - 3] + b"..."


def value_text(value):
    t = type(value)
    if value is None or t is bool or t is float or (t is int and -_BIG < value < _BIG):
        return repr(value).encode()  # short and plain: reprlib's work is not needed
    try:
        return _text(_repr.repr(value))
    except BaseException as e:  # noqa: BLE001 - a broken __repr__ must not lose the value
        return _text(f"<{type(value).__name__} whose repr() raised {type(e).__name__}>")


_BIG = 1 << 64
CALLS, ANSWERS = 4, 5
HERE = sys._getframe().f_code.co_filename
HEADER = struct.Struct(">IB")
CALL_ID = struct.Struct(">Q")
LENGTH = struct.Struct(">I")
PLAIN = frozenset((int, float, str, bytes, bool, type(None)))
# Functions the SDK serialized once arrive as a call to pickle.loads of
# their (zlib-compressed) bytes; the function made from them is kept for the
# next call with the same bytes (as a local pool keeps its module's
# functions).
FUNCTION_CACHE = 1024
_functions = {}
_decompressed = {}


def _decompress(data):
    out = _decompressed.get(data)
    if out is None:
        out = zlib.decompress(data)
        if len(_decompressed) >= FUNCTION_CACHE:
            del _decompressed[next(iter(_decompressed))]
        _decompressed[data] = out
    return out


def _loads_function(data):
    fn = _functions.get(data)
    if fn is None:
        fn = pickle.loads(data)
        if type(fn) is types.FunctionType:
            if len(_functions) >= FUNCTION_CACHE:
                del _functions[next(iter(_functions))]
            _functions[data] = fn
    return fn


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "_pickle" and name == "loads":
            return _loads_function
        if module == "zlib" and name == "decompress":
            return _decompress
        return super().find_class(module, name)


def _no_op(signum, frame):
    pass


def load_call(body):
    f = io.BytesIO(body)  # shares body, unlike a memoryview slice
    f.seek(CALL_ID.size)
    return _Unpickler(f).load()


class _Calls:
    """Reads call frames from fd 4 through its own buffer, so the worker
    knows without a system call whether the next call has already come."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.pos = 0

    def ready(self):
        """Whether a whole frame is buffered."""
        avail = len(self.buf) - self.pos
        return avail >= HEADER.size and avail >= HEADER.size + LENGTH.unpack_from(self.buf, self.pos)[0]

    def next(self):
        """The next frame as (type, body); None at end of input."""
        while not self.ready():
            rest = self.buf[self.pos:]
            need = HEADER.size if len(rest) < HEADER.size else HEADER.size + LENGTH.unpack_from(rest)[0]
            chunk = os.read(self.fd, max(1 << 16, need - len(rest)))
            if not chunk:
                return None
            self.buf, self.pos = rest + chunk if rest else chunk, 0
        n, kind = HEADER.unpack_from(self.buf, self.pos)
        start = self.pos + HEADER.size
        self.pos = start + n
        if start == 0 and self.pos == len(self.buf):
            body = self.buf  # the whole read was this frame: no copy
        else:
            body = self.buf[start:self.pos]
        if self.pos == len(self.buf):
            self.buf, self.pos = b"", 0
        return kind, body


def main():
    # The manager refuses bigger results; checking here gives a clear message.
    max_result = int(sys.argv[1]) if len(sys.argv) > 1 else 10 << 20
    # The protocol pipes are not for the programs a call starts.
    os.set_inheritable(CALLS, False)
    os.set_inheritable(ANSWERS, False)
    calls = _Calls(CALLS)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    # A batch scheduler ending a job signals every process in it. The
    # manager decides when its workers stop (it gives running calls its
    # drain grace, then kills them), so these signals do nothing here. A
    # Python handler, unlike SIG_IGN, is not inherited by programs a call
    # runs.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _no_op)

    # Answers wait in held until flush(): several go out in one write.
    held = []
    held_n = 0  # answers held
    held_at = 0.0  # when the oldest was made

    def flush():
        nonlocal held_n
        data = memoryview(b"".join(held))
        held.clear()
        held_n = 0
        while data:
            data = data[os.write(ANSWERS, data):]

    def send(kind, *parts):
        nonlocal held_n, held_at
        if not held_n:
            held_at = perf_counter()
        held.append(HEADER.pack(sum(map(len, parts)), kind))
        held.extend(parts)
        held_n += 1

    try:
        import cloudpickle
    except Exception as e:  # noqa: BLE001 - any import failure is fatal here
        send(ord("F"), (f"{sys.executable} cannot import cloudpickle ({type(e).__name__}: {e}); "
                        "install it for this interpreter (Debian: apt-get install python3-cloudpickle) "
                        "or point the manager's --python at one that has it").encode())
        flush()
        return 1
    dumps = cloudpickle.dumps
    send(ord("H"), json.dumps({"protocol": PROTOCOL, "language": "python", "pid": os.getpid(),
                               "version": sys.version.split()[0],
                               "cloudpickle": cloudpickle.__version__}).encode())
    flush()

    def failure(call_id, exc, tb_text):
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if len(summary) > 4000:
            summary = summary[:4000] + "..."
        try:
            body = dumps(("err", exc, tb_text))
        except Exception as e:  # noqa: BLE001 - the exception itself may not pickle
            body = dumps(("err", RuntimeError(f"{summary} (the exception could not be serialized: {e})"), tb_text))
        s = summary.encode("utf-8", "replace")
        t = _text(tb_text.strip() or summary, tail=True)
        send(ord("X"), call_id, LENGTH.pack(len(s)), s, LENGTH.pack(len(t)), t, body)

    # Functions whose last call took less than SHORT seconds. Answers are
    # held (to share a write) only while the next call is one of these,
    # already here, and the oldest held answer is younger than HOLD: a
    # call of a slow or new function never sits on finished answers.
    short = {}
    while True:
        if held_n and not calls.ready():
            flush()  # nothing more to run without waiting: answer now
        frame = calls.next()
        if frame is None:
            return 0  # the manager closed the calls pipe: time to go
        kind, body = frame
        if kind != ord("C") or len(body) < CALL_ID.size:
            send(ord("F"), f"unknown frame type {kind!r} or no call id; this worker speaks protocol {PROTOCOL}".encode())
            flush()
            return 2
        call_id = body[:CALL_ID.size]
        try:
            fn, args, kwargs = load_call(body)
        except BaseException as e:  # noqa: BLE001 - the caller gets every exception back
            fn = args = kwargs = None
            err = e
        else:
            err = None
        del body
        if held_n and (held_n >= HOLD_MOST or not (type(fn) is types.FunctionType and fn in short)
                       or perf_counter() - held_at >= HOLD):
            flush()
        if err is None:
            try:
                t0 = perf_counter()
                value = fn(*args, **kwargs)
                _timed(short, fn, perf_counter() - t0)
            except BaseException as e:  # noqa: BLE001 - the caller gets every exception back
                err = e
            del args, kwargs
        if err is not None:
            if type(fn) is types.FunctionType:
                short.pop(fn, None)
            tb = err.__traceback__
            # Leave this file's frame out: the caller wants its own code.
            if tb is not None and tb.tb_frame.f_code.co_filename == HERE:
                tb = tb.tb_next
            failure(call_id, err, "".join(traceback.format_exception(type(err), err, tb)))
            del err, tb, fn
            continue
        del fn
        try:
            # pickle writes these exactly as cloudpickle does, only faster.
            out = pickle.dumps(("ok", value), 5) if type(value) in PLAIN else dumps(("ok", value))
        except Exception as e:  # noqa: BLE001
            failure(call_id, e, f"the return value of type {type(value).__name__} could not be serialized:\n"
                       + traceback.format_exc())
            del value
            continue
        if len(out) > max_result:
            del value
            failure(call_id, ValueError(f"switchyard: the serialized return value is {len(out)} bytes; "
                               f"the limit is {max_result}"), "")
            continue
        t = value_text(value)
        del value
        send(ord("R"), call_id, LENGTH.pack(len(t)), t, out)
        del out


# Answer batching (see the main loop): a function is short if its last call
# took under SHORT seconds; answers are held at most HOLD seconds and
# HOLD_MOST at a time.
SHORT = 0.0002
HOLD = 0.001
HOLD_MOST = 16


def _timed(short, fn, took):
    """Remembers whether fn's call was short (only for functions the worker
    keeps, so the table stays small)."""
    if type(fn) is not types.FunctionType:
        return
    if took < SHORT:
        if fn not in short:
            if len(short) >= FUNCTION_CACHE:
                short.clear()
            short[fn] = True
    else:
        short.pop(fn, None)


if __name__ == "__main__":
    sys.exit(main())

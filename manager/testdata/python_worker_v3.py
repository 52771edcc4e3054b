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

PROTOCOL = 3
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
    try:
        return _text(_repr.repr(value))
    except BaseException as e:  # noqa: BLE001 - a broken __repr__ must not lose the value
        return _text(f"<{type(value).__name__} whose repr() raised {type(e).__name__}>")
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


def main():
    # The manager refuses bigger results; checking here gives a clear message.
    max_result = int(sys.argv[1]) if len(sys.argv) > 1 else 10 << 20
    # The protocol pipes are not for the programs a call starts.
    os.set_inheritable(CALLS, False)
    os.set_inheritable(ANSWERS, False)
    proto_in = os.fdopen(CALLS, "rb", buffering=1 << 16)
    proto_out = os.fdopen(ANSWERS, "wb", buffering=1 << 16)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    # A batch scheduler ending a job signals every process in it. The
    # manager decides when its workers stop (it gives running calls its
    # drain grace, then kills them), so these signals do nothing here. A
    # Python handler, unlike SIG_IGN, is not inherited by programs a call
    # runs.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _no_op)

    def send(kind, *parts):
        n = sum(len(p) for p in parts)
        proto_out.write(HEADER.pack(n, kind))
        for p in parts:
            proto_out.write(p)
        proto_out.flush()

    try:
        import cloudpickle
    except Exception as e:  # noqa: BLE001 - any import failure is fatal here
        send(ord("F"), (f"{sys.executable} cannot import cloudpickle ({type(e).__name__}: {e}); "
                        "install it for this interpreter (Debian: apt-get install python3-cloudpickle) "
                        "or point the manager's --python at one that has it").encode())
        return 1
    dumps = cloudpickle.dumps
    send(ord("H"), json.dumps({"protocol": PROTOCOL, "language": "python", "pid": os.getpid(),
                               "version": sys.version.split()[0],
                               "cloudpickle": cloudpickle.__version__}).encode())

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

    read = proto_in.read
    while True:
        head = read(HEADER.size)
        if len(head) < HEADER.size:
            return 0  # the manager closed the calls pipe: time to go
        n, kind = HEADER.unpack(head)
        body = read(n)
        if len(body) < n:
            return 0
        if kind != ord("C") or n < CALL_ID.size:
            send(ord("F"), f"unknown frame type {kind!r} or no call id; this worker speaks protocol {PROTOCOL}".encode())
            return 2
        call_id = body[:CALL_ID.size]
        try:
            fn, args, kwargs = load_call(body)
            del body
            value = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - the caller gets every exception back
            tb = e.__traceback__
            # Leave this file's frame out: the caller wants its own code.
            if tb is not None and tb.tb_frame.f_code.co_filename == HERE:
                tb = tb.tb_next
            failure(call_id, e, "".join(traceback.format_exception(type(e), e, tb)))
            del e, tb
            continue
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


if __name__ == "__main__":
    sys.exit(main())

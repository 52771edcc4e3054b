"""Switchyard Python worker: runs serialized calls sent by a manager.

The manager embeds this file, writes it to its state directory and starts it
as `PYTHON -B python_worker.py MAX_RESULT_BYTES`, one long-lived process per worker slot. It
speaks the framed protocol of docs/worker-protocol.md over stdin/stdout:

    frame = 4-byte big-endian body length, 1 type byte, body

    worker -> manager  'H' hello (JSON), once, after start-up
                       'F' fatal (UTF-8 text), then the worker exits
    manager -> worker  'C' call: cloudpickle of (fn, args, kwargs)
    worker -> manager  'R' return: cloudpickle of ("ok", value)
                       'X' exception: 4-byte length, UTF-8 summary, then
                           cloudpickle of ("err", exception, traceback_text)

User code never sees the protocol pipes: fd 0 is /dev/null and fd 1 goes to
stderr, so a print() cannot corrupt a frame.
"""
import io
import json
import os
import pickle
import signal
import struct
import sys
import traceback
import types
import zlib

PROTOCOL = 1
HEADER = struct.Struct(">IB")
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
    return _Unpickler(io.BytesIO(body)).load()


def main():
    # The manager refuses bigger results; checking here gives a clear message.
    max_result = int(sys.argv[1]) if len(sys.argv) > 1 else 10 << 20
    # Take the protocol pipes away from fds 0 and 1 before any user code runs.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, "r")
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    # A batch scheduler ending a job signals every process in it. The
    # manager decides when its workers stop (it gives running calls its
    # drain grace, then kills them), so these signals do nothing here. A
    # Python handler, unlike SIG_IGN, is not inherited by programs a call
    # runs.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _no_op)
    # The script's own directory (the manager's state dir) is no place to
    # import user modules from.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]

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

    def failure(exc, tb_text):
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if len(summary) > 4000:
            summary = summary[:4000] + "..."
        try:
            body = dumps(("err", exc, tb_text))
        except Exception as e:  # noqa: BLE001 - the exception itself may not pickle
            body = dumps(("err", RuntimeError(f"{summary} (the exception could not be serialized: {e})"), tb_text))
        s = summary.encode("utf-8", "replace")
        send(ord("X"), LENGTH.pack(len(s)), s, body)

    read = proto_in.read
    while True:
        head = read(HEADER.size)
        if len(head) < HEADER.size:
            return 0  # the manager closed our stdin: time to go
        n, kind = HEADER.unpack(head)
        body = read(n)
        if len(body) < n:
            return 0
        if kind != ord("C"):
            send(ord("F"), f"unknown frame type {kind!r}; this worker speaks protocol {PROTOCOL}".encode())
            return 2
        try:
            fn, args, kwargs = load_call(body)
            del body
            value = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - the caller gets every exception back
            tb = e.__traceback__
            # Leave this file's frame out: the caller wants its own code.
            if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next
            failure(e, "".join(traceback.format_exception(type(e), e, tb)))
            del e, tb
            continue
        try:
            # pickle writes these exactly as cloudpickle does, only faster.
            out = pickle.dumps(("ok", value), 5) if type(value) in PLAIN else dumps(("ok", value))
        except Exception as e:  # noqa: BLE001
            failure(e, f"the return value of type {type(value).__name__} could not be serialized:\n"
                       + traceback.format_exc())
            continue
        finally:
            del value
        if len(out) > max_result:
            failure(ValueError(f"switchyard: the serialized return value is {len(out)} bytes; "
                               f"the limit is {max_result}"), "")
            continue
        send(ord("R"), out)
        del out


if __name__ == "__main__":
    sys.exit(main())

"""A static scan of a joblib/pickle artifact: what it was made with, without loading it.

Nothing here imports, calls or unpickles anything from the artifact. The opcodes are
decoded by :func:`pickletools.genops` and run on a small *symbolic* stack machine whose
values are plain data (strings, numbers, containers) or inert placeholders for globals
and calls. That is enough to read two things a scikit-learn pickle carries:

* the ``_sklearn_version`` every estimator writes into its state (``BaseEstimator
  .__getstate__``): the scikit-learn version the model was *trained and pickled* with;
* the globals it references (``module.name``): the classes loading it would import.

joblib writes numpy arrays' raw bytes *inside* the pickle stream, right after the
``BUILD`` of a ``joblib.numpy_pickle.NumpyArrayWrapper``; the scan reads the wrapper's
shape and dtype and skips exactly those bytes (plus joblib's alignment padding), and
scans object arrays (a nested pickle stream) recursively. Whole-file compression by
joblib is handled for zlib, gzip, bz2, xz and lzma; lz4 and the pre-0.9.3 ``ZF`` format
are reported as not scanned. Anything the scan cannot follow ends it early with a note;
the scan never fails the caller.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import pickletools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["HashingReader", "ScanResult", "scan_artifact"]

_CHUNK = 1 << 20

# Magic numbers of joblib's whole-file compressors (joblib/compressor.py).
_PREFIXES: tuple[tuple[str, bytes], ...] = (
    ("zf", b"ZF"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZ"),
    ("xz", b"\xfd7zXZ"),
    ("lzma", b"\x5d\x00"),
    ("lz4", b"\x04\x22\x4d\x18"),
    ("zlib", b"\x78"),
)
_NUMPY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_MAX_ARRAY_BYTES = 1 << 40  # a shape claiming more than this is not followed
_KEEP_BYTES = 4096


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class ScanResult:
    """What a static scan found. ``complete`` is False when the scan stopped early."""

    compression: str = "none"
    pickle_protocol: int | None = None
    # class (module.name) -> the _sklearn_version in its pickled state
    sklearn_versions: dict[str, str] = field(default_factory=dict)
    globals: set[str] = field(default_factory=set)
    complete: bool = False
    note: str = ""

    @property
    def sklearn_version(self) -> str | None:
        """The one scikit-learn version the estimators were pickled with, if they agree."""
        found = set(self.sklearn_versions.values())
        return found.pop() if len(found) == 1 else None

    def to_manifest(self) -> dict[str, Any]:
        return {
            "method": "static scan of the pickle opcodes (nothing unpickled)",
            "complete": self.complete,
            "note": self.note,
            "compression": self.compression,
            "pickleProtocol": self.pickle_protocol,
            "scikit-learn": self.sklearn_version,
            "estimators": dict(sorted(self.sklearn_versions.items())),
            "globals": sorted(self.globals),
        }


class HashingReader:
    """Wraps a byte stream: counts and hashes every byte read through it."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._source.read(n)
        self._sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _Forward:
    """A forward-only reader with a position, the interface genops needs."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := self._read(_CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            parts, want = [], n
            while want > 0:  # a decompressor may return short reads
                chunk = self._read(want)
                if not chunk:
                    break
                parts.append(chunk)
                want -= len(chunk)
            data = b"".join(parts)
        self._pos += len(data)
        return data

    def readline(self) -> bytes:
        out = bytearray()
        while (byte := self.read(1)) and byte != b"\n":
            out += byte
        return bytes(out) + (b"\n" if byte == b"\n" else b"")

    def tell(self) -> int:
        return self._pos

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, _CHUNK)))
            if not got:
                raise EOFError("the artifact ends inside a numpy array")
            n -= got


class _ZlibReader:
    def __init__(self, source: Readable) -> None:
        self._source = source
        self._z = zlib.decompressobj()
        self._buf = b""

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and not self._z.eof:
            raw = self._source.read(_CHUNK)
            if not raw:
                break
            self._buf += self._z.decompress(raw)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _Peeked(io.RawIOBase):
    """Puts back the bytes read to detect the compression."""

    def __init__(self, head: bytes, source: Readable) -> None:
        super().__init__()
        self._head, self._source = head, source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if self._head:
            data, self._head = self._head[:want], self._head[want:]
        else:
            data = self._source.read(want)
        buffer[: len(data)] = data
        return len(data)


# --------------------------------------------------------------------- symbolic values


@dataclass(eq=False)
class _Global:
    module: str
    name: str


@dataclass(eq=False)
class _Call:
    func: Any
    args: Any
    state: Any = None


class _Opaque:
    """A value the scan does not model (persistent ids, extension codes, buffers)."""


class _Stop(Exception):
    pass


def scan_artifact(stream: Readable) -> ScanResult:
    """Scan a joblib or plain pickle artifact read from ``stream`` (read once, forward)."""
    result = ScanResult()
    head = stream.read(8)
    source = io.BufferedReader(_Peeked(head, stream), _CHUNK)
    for name, prefix in _PREFIXES:
        if head.startswith(prefix):
            result.compression = name
            break
    if head[:1] == b"\x80":  # a pickle PROTO opcode is not a compressor's magic
        result.compression = "none"
    reader: Callable[[int], bytes]
    match result.compression:
        case "none":
            reader = source.read
        case "zlib":
            reader = _ZlibReader(source).read
        case "gzip":
            reader = gzip.GzipFile(fileobj=source, mode="rb").read
        case "bz2":
            reader = bz2.BZ2File(source).read
        case "xz" | "lzma":
            fmt = lzma.FORMAT_XZ if result.compression == "xz" else lzma.FORMAT_ALONE
            reader = lzma.LZMAFile(source, format=fmt).read  # noqa: SIM115
        case other:
            result.note = f"{other}-compressed artifacts are not scanned"
            return result
    try:
        _scan_stream(_Forward(reader), result)
        result.complete = True
    except Exception as exc:  # the scan reports what it could not follow, never fails
        result.note = f"scan stopped: {type(exc).__name__}: {exc}"
    return result


def _scan_stream(f: _Forward, result: ScanResult) -> None:
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        items, stack = stack, marks.pop()
        return items

    arg: Any
    for op, arg, _pos in pickletools.genops(f):  # type: ignore[arg-type]
        name = op.name
        if name == "PROTO":
            if result.pickle_protocol is None:
                result.pickle_protocol = int(arg)
        elif name == "FRAME":
            pass
        elif name == "STOP":
            return
        elif name == "MARK":
            marks.append(stack)
            stack = []
        elif name in ("NONE",):
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name in ("EMPTY_LIST",):
            stack.append([])
        elif name in ("EMPTY_DICT",):
            stack.append({})
        elif name in ("EMPTY_TUPLE",):
            stack.append(())
        elif name in ("EMPTY_SET",):
            stack.append([])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("TUPLE", "FROZENSET"):
            marked = pop_mark()  # before touching `stack`: pop_mark rebinds it
            stack.append(tuple(marked))
        elif name == "LIST":
            marked = pop_mark()
            stack.append(marked)
        elif name == "DICT":
            marked = pop_mark()
            stack.append(_pairs({}, marked))
        elif name == "APPEND":
            value = stack.pop()
            _append(stack[-1], [value])
        elif name in ("APPENDS", "ADDITEMS"):
            marked = pop_mark()
            _append(stack[-1], marked)
        elif name == "SETITEM":
            value = stack.pop()
            key = stack.pop()
            _pairs(stack[-1], [key, value])
        elif name == "SETITEMS":
            marked = pop_mark()
            _pairs(stack[-1], marked)
        elif name == "POP":
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_global(result, module, attr))
        elif name == "STACK_GLOBAL":
            attr = stack.pop()
            module = stack.pop()
            stack.append(_global(result, str(module), str(attr)))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif name == "NEWOBJ_EX":
            stack.pop()
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif name == "OBJ":
            marked = pop_mark()
            stack.append(_Call(marked[0], tuple(marked[1:])))
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            marked = pop_mark()
            stack.append(_Call(_global(result, module, attr), tuple(marked)))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if isinstance(target, _Call):
                target.state = state
                _on_build(f, target, result)
        elif name in ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER"):
            if name == "BINPERSID":
                stack.pop()
            stack.append(_Opaque())
        elif name == "READONLY_BUFFER":
            pass
        elif op.stack_before == [] and len(op.stack_after) == 1:
            # a constant: int, float, str, bytes; large byte strings (array buffers in a
            # plain pickle) are not needed by the scan and would only hold memory
            big = isinstance(arg, bytes | bytearray) and len(arg) > _KEEP_BYTES
            stack.append(_Opaque() if big else arg)
        else:
            raise ValueError(f"opcode {name} is not modelled")
    raise EOFError("the pickle stream has no STOP")


def _global(result: ScanResult, module: str, attr: str) -> _Global:
    result.globals.add(f"{module}.{attr}")
    return _Global(module, attr)


def _append(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)


def _pairs(target: Any, items: list[Any]) -> Any:
    if isinstance(target, dict):
        for key, value in zip(items[::2], items[1::2], strict=True):
            with contextlib.suppress(TypeError):  # an unhashable key: not needed here
                target[key] = value
    return target


def _on_build(f: _Forward, obj: _Call, result: ScanResult) -> None:
    cls = obj.func
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    if not isinstance(state, dict) or not isinstance(cls, _Global):
        return
    version = state.get("_sklearn_version")
    if isinstance(version, str):
        result.sklearn_versions[f"{cls.module}.{cls.name}"] = version
    if (cls.module, cls.name) == _NUMPY_WRAPPER:
        _skip_array(f, state, result)


def _skip_array(f: _Forward, state: dict[str, Any], result: ScanResult) -> None:
    """Step over the array bytes joblib wrote right after the wrapper's BUILD."""
    dtype = state.get("dtype")
    if _has_object(dtype):
        _scan_stream(f, result)  # joblib pickles object arrays as a nested stream
        return
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"a numpy array with an unreadable shape {shape!r}")
    count = 1
    for dim in shape:
        count *= dim
    nbytes = count * _itemsize(dtype)
    if nbytes > _MAX_ARRAY_BYTES:
        raise ValueError(f"a numpy array of {nbytes} bytes is not followed")
    if state.get("numpy_array_alignment_bytes") is not None:
        padding = f.read(1)
        if not padding:
            raise EOFError("the artifact ends before a numpy array")
        f.skip(padding[0])
    f.skip(nbytes)


def _dtype_parts(value: Any) -> tuple[str, tuple[Any, ...]]:
    """(type code, state) of a pickled ``numpy.dtype('f8', False, True)`` + BUILD state.

    The state is numpy's ``(version, byteorder, subarray, names, fields, elsize,
    alignment, flags)``; elsize is -1 for types whose code gives the size.
    """
    if not (isinstance(value, _Call) and isinstance(value.args, tuple) and value.args):
        raise ValueError("a numpy array whose dtype is not a plain numpy.dtype")
    code = value.args[0]
    if not isinstance(code, str):
        raise ValueError(f"a numpy dtype {code!r} the scan does not model")
    state = value.state if isinstance(value.state, tuple) else ()
    return code, state


def _has_object(value: Any) -> bool:
    code, state = _dtype_parts(value)
    if code.startswith("O"):
        return True
    fields = state[4] if len(state) > 4 else None
    if isinstance(fields, dict):  # a structured dtype: {name: (dtype, offset[, title])}
        return any(
            isinstance(spec, tuple) and spec and _has_object(spec[0]) for spec in fields.values()
        )
    return False


def _itemsize(value: Any) -> int:
    code, state = _dtype_parts(value)
    if len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5]  # flexible and structured types carry their item size
    if len(state) > 2 and state[2] is not None:
        raise ValueError("numpy sub-array dtypes are not followed")
    digits = "".join(ch for ch in code if ch.isdigit())
    if not digits:
        raise ValueError(f"a numpy dtype {code!r} the scan does not model")
    return int(digits)

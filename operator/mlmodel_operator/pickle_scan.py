"""A static scan of a joblib/pickle artifact: what it was made with, without loading it.

Nothing here imports, calls or unpickles anything from the artifact. The opcodes are
read one by one (with :mod:`pickletools`' opcode table) and run on a small *symbolic*
stack machine whose values are plain data (strings, numbers, containers) or inert
placeholders for globals and calls. That is enough to read two things a scikit-learn
pickle carries:

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

The artifact is untrusted input, so the scan is bounded (:class:`ScanLimits`): it
inflates in chunks of at most 1 MiB, never a whole stream; it steps over large
arguments (``BINBYTES``, ``BINUNICODE``, ...) and array bytes in chunks instead of
holding them; and it stops, *refused*, past a bound on the bytes inflated, the
inflation ratio, its CPU time, the opcodes, the memo, the stack and the length of a
line. A refusal names the limit and what was seen (``ScanResult.refused``).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import lzma
import pickle
import pickletools
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["HashingReader", "ScanLimits", "ScanResult", "scan_artifact"]

_CHUNK = 1 << 20  # the most the scan inflates or holds at once
_IN_CHUNK = 64 << 10  # compressed bytes fed to a decompressor at once
_BUFFER = 64 << 10  # the look-ahead of the opcode reader

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
_KEEP_BYTES = 4096  # a longer string or bytes argument is stepped over, never held
_KEEP_TOTAL = 32 << 20  # strings kept in all; past this every constant is a placeholder
_DICT_KEEP = 10_000  # entries kept per dict (estimator states and dtype fields are small)
_CHECK_EVERY = 4096  # opcodes between two looks at the CPU clock


@dataclass(frozen=True)
class ScanLimits:
    """How far the scan follows an artifact before it refuses to go on.

    The defaults let real models through (a 100-tree forest is ~17,000 opcodes and
    inflates ~12x) and stop a decompression bomb after ``ratio_after`` bytes.
    """

    max_inflated_bytes: int = 2 << 30  # pickle bytes inflated from a compressed artifact
    max_ratio: int = 200  # inflated / compressed bytes, checked once past ratio_after
    ratio_after: int = 64 << 20
    max_seconds: float = 30.0  # CPU seconds of the scanning thread
    max_opcodes: int = 5_000_000
    max_memo: int = 500_000  # in all streams being read (object arrays nest)
    max_stack: int = 100_000
    max_line: int = 64 << 10  # a protocol-0 argument runs to a newline
    max_decoder_memory: int = 128 << 20  # what an lzma/xz header may make the decoder take


class ScanRefused(Exception):
    """A bound of :class:`ScanLimits` was reached; the message names it and what was seen."""


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class ScanResult:
    """What a static scan found. ``complete`` is False when the scan stopped early;
    ``refused`` says which bound stopped it, when one did."""

    compression: str = "none"
    pickle_protocol: int | None = None
    # class (module.name) -> the _sklearn_version in its pickled state
    sklearn_versions: dict[str, str] = field(default_factory=dict)
    globals: set[str] = field(default_factory=set)
    complete: bool = False
    note: str = ""
    refused: str = ""
    stream_bytes: int = 0  # pickle bytes taken in (after decompression)

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

    @classmethod
    def not_scanned(cls, refused: str) -> ScanResult:
        """The result for an artifact whose scan was refused before (not scanned again)."""
        return cls(refused=refused, note=f"scan refused: {refused} (not scanned again)")


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


def _size(n: int) -> str:
    """A byte count for a message: exact, and in MiB when large."""
    return f"{n} bytes" + (f" ({n / (1 << 20):.1f} MiB)" if n >= 1 << 20 else "")


class _Budget:
    """The scan's running counts against its limits."""

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self._started = time.thread_time()
        self.opcodes = 0
        self.kept = 0  # bytes of strings held
        self.memoized = 0  # memo entries held

    def check_time(self) -> None:
        used = time.thread_time() - self._started
        if used >= self.limits.max_seconds:
            raise ScanRefused(
                f"the scan used {used:.1f} s of CPU, past its limit of "
                f"{self.limits.max_seconds:g} s"
            )

    def opcode(self) -> None:
        if self.opcodes % _CHECK_EVERY == 0:
            self.check_time()
        self.opcodes += 1
        if self.opcodes > self.limits.max_opcodes:
            raise ScanRefused(
                f"the pickle has more than {self.limits.max_opcodes} opcodes, the limit"
            )


class _Input:
    """The artifact's bytes with the magic-number head put back; counts what it gave."""

    def __init__(self, head: bytes, source: Readable) -> None:
        self._head, self._source = head, source
        self.consumed = 0

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._source.read(n)
        self.consumed += len(data)
        return data


class _Inflater:
    """A decompressor fed in small pieces that never returns more than it is asked for.

    ``max_length`` keeps every call's output to the size the reader asked for, so a
    stream that inflates a thousandfold is never inflated all at once.
    """

    def __init__(self, name: str, source: _Input, limits: ScanLimits) -> None:
        self.name, self._source, self._limits = name, source, limits
        self.inflated = 0
        self._d: Any
        if name == "zlib":
            self._d = zlib.decompressobj()
        elif name == "gzip":
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "bz2":
            self._d = bz2.BZ2Decompressor()
        else:
            fmt = lzma.FORMAT_XZ if name == "xz" else lzma.FORMAT_ALONE
            self._d = lzma.LZMADecompressor(format=fmt, memlimit=limits.max_decoder_memory)

    def read(self, n: int) -> bytes:
        n = max(1, min(n, _CHUNK))  # max_length 0 would mean "no limit"
        zlib_like = self.name in ("zlib", "gzip")
        while not self._d.eof:
            if zlib_like:
                raw = self._d.unconsumed_tail or self._source.read(_IN_CHUNK)
                # at the end of the input, what inflate still holds (less than a match)
                out: bytes = self._d.decompress(raw, n) if raw else self._d.flush()
            else:
                if self._d.needs_input:
                    raw = self._source.read(_IN_CHUNK)
                    if not raw:
                        return b""  # truncated: the opcode reader says where
                else:
                    raw = b""
                out = self._decompress(raw, n)
            if out:
                self._count(len(out))
                return out
            if zlib_like and not raw:
                return b""
        return b""

    def _decompress(self, raw: bytes, n: int) -> bytes:
        try:
            out: bytes = self._d.decompress(raw, n)
        except lzma.LZMAError as exc:
            if "memory" not in str(exc).lower():
                raise
            raise ScanRefused(
                f"the {self.name} header asks for more decoder memory than the limit of "
                f"{_size(self._limits.max_decoder_memory)}"
            ) from None
        return out

    def _count(self, n: int) -> None:
        self.inflated += n
        lim, consumed = self._limits, max(1, self._source.consumed)
        if self.inflated > lim.max_inflated_bytes:
            raise ScanRefused(
                f"the {self.name} stream inflates past the limit of "
                f"{_size(lim.max_inflated_bytes)} from {_size(self._source.consumed)}"
            )
        if self.inflated > lim.ratio_after and self.inflated > lim.max_ratio * consumed:
            raise ScanRefused(
                f"{self.name} inflates {self.inflated // consumed}x "
                f"({_size(self.inflated)} from {_size(consumed)}), past the limit of "
                f"{lim.max_ratio}x: a decompression bomb, or an artifact too repetitive "
                "to be scanned"
            )


class _Raw(io.RawIOBase):
    """The pickle stream, for a BufferedReader: counts bytes and looks at the clock."""

    def __init__(self, read: Any, budget: _Budget) -> None:
        super().__init__()
        self._read, self._budget = read, budget
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._budget.check_time()
        data = self._read(min(len(buffer), _CHUNK))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


class _Stream:
    """The pickle stream as the scan reads it: small reads, skips in chunks, bounded lines."""

    def __init__(self, raw: _Raw, limits: ScanLimits) -> None:
        self._f = io.BufferedReader(raw, _BUFFER)
        self._limits = limits
        self._scratch = bytearray(4 * _BUFFER)

    def read(self, n: int) -> bytes:
        return self._f.read(n)

    def readline(self) -> bytes:
        line = self._f.readline(self._limits.max_line + 1)
        if len(line) > self._limits.max_line:
            raise ScanRefused(
                f"an opcode's argument line is longer than the limit of "
                f"{_size(self._limits.max_line)}"
            )
        return line

    def skip(self, n: int, what: str) -> None:
        """Read past ``n`` bytes without keeping them (they still pass the hash)."""
        view = memoryview(self._scratch)
        while n > 0:
            got = self._f.readinto(view[: min(n, len(view))])
            if not got:
                raise EOFError(f"the artifact ends inside {what}")
            n -= got


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
    """A value the scan does not model (persistent ids, extension codes, buffers) or does
    not keep (a long string or bytes argument, stepped over)."""


_OPAQUE = _Opaque()
_CODE2OP = {op.code.encode("latin-1"): op for op in pickletools.opcodes}


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _latin1(data: bytes) -> str:
    return data.decode("latin-1")


# Length-prefixed arguments: (struct format of the length, decoder of the payload).
_PREFIXED: dict[str, tuple[str, Any]] = {
    "string1": ("<B", _latin1),
    "string4": ("<i", _latin1),
    "bytes1": ("<B", bytes),
    "bytes4": ("<I", bytes),
    "bytes8": ("<Q", bytes),
    "bytearray8": ("<Q", bytearray),
    "unicodestring1": ("<B", _utf8),
    "unicodestring4": ("<I", _utf8),
    "unicodestring8": ("<Q", _utf8),
    "long1": ("<B", pickle.decode_long),
    "long4": ("<i", pickle.decode_long),
}


def _read_arg(f: _Stream, desc: Any, budget: _Budget) -> Any:
    """An opcode's argument; a long one is stepped over and stands for a placeholder."""
    prefixed = _PREFIXED.get(desc.name)
    if prefixed is not None:
        fmt, decode = prefixed
        head = f.read(struct.calcsize(fmt))
        if len(head) < struct.calcsize(fmt):
            raise EOFError(f"the artifact ends inside a {desc.name} length")
        (n,) = struct.unpack(fmt, head)
        if n < 0:
            raise ValueError(f"a {desc.name} argument of negative length {n}")
        if n > _KEEP_BYTES or budget.kept + n > _KEEP_TOTAL:
            f.skip(n, f"a {desc.name} argument of {n} bytes")
            return _OPAQUE
        data = f.read(n)
        if len(data) < n:
            raise EOFError(f"the artifact ends inside a {desc.name} argument")
        budget.kept += n
        return decode(data)
    if desc.n == pickletools.UP_TO_NEWLINE:
        line = f.readline()
        if desc.name == "stringnl_noescape_pair":  # GLOBAL and INST: module, then name
            line += f.readline()
        budget.kept += len(line)
        return desc.reader(io.BytesIO(line))
    return desc.reader(f)  # a fixed size of at most 8 bytes


def scan_artifact(stream: Readable, limits: ScanLimits | None = None) -> ScanResult:
    """Scan a joblib or plain pickle artifact read from ``stream`` (read once, forward).

    Reads only what the scan needs: the caller drains the rest (through its hash).
    """
    limits = limits or ScanLimits()
    result = ScanResult()
    head = stream.read(8)
    for name, prefix in _PREFIXES:
        if head.startswith(prefix):
            result.compression = name
            break
    if head[:1] == b"\x80":  # a pickle PROTO opcode is not a compressor's magic
        result.compression = "none"
    if result.compression in ("zf", "lz4"):
        result.note = f"{result.compression}-compressed artifacts are not scanned"
        return result
    budget = _Budget(limits)
    source = _Input(head, stream)
    read = source.read
    if result.compression != "none":
        read = _Inflater(result.compression, source, limits).read
    raw = _Raw(read, budget)
    try:
        _scan_stream(_Stream(raw, limits), result, budget)
        result.complete = True
    except ScanRefused as exc:
        result.refused = str(exc)
        result.note = f"scan refused: {exc}"
    except Exception as exc:  # the scan reports what it could not follow, never fails
        result.note = f"scan stopped: {type(exc).__name__}: {exc}"
    result.stream_bytes = raw.position
    return result


def _scan_stream(f: _Stream, result: ScanResult, budget: _Budget) -> None:
    memo: list[Any] = []  # indexes are dense: MEMOIZE appends, PUT almost always does
    try:
        _run(f, result, budget, memo)
    finally:
        budget.memoized -= len(memo)  # a nested stream's memo is gone when it ends


def _run(f: _Stream, result: ScanResult, budget: _Budget, memo: list[Any]) -> None:
    limits = budget.limits
    stack: list[Any] = []
    marks: list[list[Any]] = []

    def pop_mark() -> list[Any]:
        nonlocal stack
        items, stack = stack, marks.pop()
        return items

    def remember(index: int) -> None:
        if index >= len(memo):
            grow = index + 1 - len(memo)
            if budget.memoized + grow > limits.max_memo:
                raise ScanRefused(
                    f"the pickle has more than {limits.max_memo} memoized values, the limit"
                )
            memo.extend([None] * grow)
            budget.memoized += grow
        memo[index] = stack[-1]

    while True:
        budget.opcode()
        code = f.read(1)
        if not code:
            raise EOFError("the pickle stream has no STOP")
        op = _CODE2OP.get(code)
        if op is None:
            raise ValueError(f"unknown opcode {code!r}")
        arg: Any = None if op.arg is None else _read_arg(f, op.arg, budget)
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
        elif name in ("EMPTY_LIST", "EMPTY_SET"):
            stack.append(_OPAQUE)  # list and set items are never needed: not kept
        elif name in ("EMPTY_DICT",):
            stack.append({})
        elif name in ("EMPTY_TUPLE",):
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("TUPLE", "FROZENSET"):
            marked = pop_mark()  # before touching `stack`: pop_mark rebinds it
            stack.append(tuple(marked))
        elif name == "LIST":
            pop_mark()
            stack.append(_OPAQUE)
        elif name == "DICT":
            marked = pop_mark()
            stack.append(_pairs({}, marked))
        elif name == "APPEND":
            stack.pop()
        elif name in ("APPENDS", "ADDITEMS"):
            pop_mark()
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
            remember(int(arg))
        elif name == "MEMOIZE":
            remember(len(memo))
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_global(result, module, attr))
        elif name == "STACK_GLOBAL":
            attr = stack.pop()
            module = stack.pop()
            stack.append(_global(result, _text(module), _text(attr)))
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
                _on_build(f, target, result, budget)
        elif name in ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER"):
            if name == "BINPERSID":
                stack.pop()
            stack.append(_OPAQUE)
        elif name == "READONLY_BUFFER":
            pass
        elif op.stack_before == [] and len(op.stack_after) == 1:
            stack.append(arg)  # a constant: int, float, str, bytes (long ones: _OPAQUE)
        else:
            raise ValueError(f"opcode {name} is not modelled")
        if len(stack) + len(marks) > limits.max_stack:
            raise ScanRefused(f"the pickle stacks more than {limits.max_stack} values, the limit")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "?"


def _global(result: ScanResult, module: str, attr: str) -> _Global:
    result.globals.add(f"{module}.{attr}")
    return _Global(module, attr)


def _pairs(target: Any, items: list[Any]) -> Any:
    if isinstance(target, dict):
        for key, value in zip(items[::2], items[1::2], strict=True):
            if len(target) >= _DICT_KEEP:
                break  # an estimator's state or a dtype's fields are far smaller
            with contextlib.suppress(TypeError):  # an unhashable key: not needed here
                target[key] = value
    return target


def _on_build(f: _Stream, obj: _Call, result: ScanResult, budget: _Budget) -> None:
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
        _skip_array(f, state, result, budget)


def _skip_array(f: _Stream, state: dict[str, Any], result: ScanResult, budget: _Budget) -> None:
    """Step over the array bytes joblib wrote right after the wrapper's BUILD."""
    dtype = state.get("dtype")
    if _has_object(dtype):
        _scan_stream(f, result, budget)  # joblib pickles object arrays as a nested stream
        return
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"a numpy array with an unreadable shape {shape!r}")
    count = 1
    for dim in shape:
        count *= dim
    nbytes = count * _itemsize(dtype)
    limit = budget.limits.max_inflated_bytes
    if result.compression != "none" and nbytes > limit:  # refused before inflating it
        raise ScanRefused(
            f"a numpy array of {_size(nbytes)} in a {result.compression} stream, past the "
            f"limit of {_size(limit)} inflated"
        )
    if state.get("numpy_array_alignment_bytes") is not None:
        padding = f.read(1)
        if not padding:
            raise EOFError("the artifact ends before a numpy array")
        f.skip(padding[0], "joblib's alignment padding")
    f.skip(nbytes, f"a numpy array of {nbytes} bytes")


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

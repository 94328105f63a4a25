"""How the trusted tests talk to the program under test: plain data over pipes (runs inside the jail).

The harness (trusted test code) and the candidate (the model's program) are separate processes in separate jails;
this module is their only link. The harness calls the program's objects through ``Remote`` proxies; each request
and reply is one length-prefixed JSON message. Values cross as JSON of builtin types only (``encode``/``decode``):
the harness builds plain ints, strs, lists, dicts, ... from what it reads, so an object of the program's (say one
whose ``__eq__`` is always true) never reaches the tests. Any other object crosses as an opaque handle (``Remote``)
that compares by identity and can only be called, read or written by attribute (MBPP tests build the program's
classes, e.g. ``Node(1)``). Subclasses of builtins (namedtuple, Counter, IntEnum), numpy values and iterators
are converted to their plain content by the program's side, which is where they come from.

Protocol: the candidate runs ``program.py`` and sends ``{"ready": true}``; the harness sends ``call`` /
``getattr`` / ``setattr`` requests, each answered by ``{"ok": value}`` or ``{"raise": [type name, message]}``
(builtin exception types are re-raised as themselves, others as ``ProgramError``), then ``exit``.

Stdlib only, no fem imports: ``fem.sandbox.supervisor`` sends this file's text, followed by ``bootstrap.py``'s,
to ``python -I -c``.
"""

import builtins
import json
import os
import sys

MAX_MESSAGE = 64 * 1024 * 1024  # bytes of one request or reply
MAX_DEPTH = 200  # nesting of one value
MAX_ITEMS = 1_000_000  # items drawn from one iterator the program returns
_SCALARS = (type(None), bool, int, float, str)
_KEYS, _VALUES, _ITEMS = type({}.keys()), type({}.values()), type({}.items())
_PLAIN = {list: "l", tuple: "t", set: "s", frozenset: "f"}


class ProgramError(Exception):
    """The program raised an exception that is not a builtin type, sent a malformed reply, or ended mid-test."""


# ----- values as plain data ----------------------------------------------------------------------------------
def _as_builtin(value):
    """The plain builtin copy of a value whose type subclasses a builtin (namedtuple, Counter, IntEnum, ...),
    or of a numpy value, or of an iterator (drawn to a list); None when there is none."""
    t = type(value)
    for base, convert in (
        (int, int.__int__),
        (float, float.__float__),
        (complex, complex.__complex__),
        (str, str.__str__),
        (bytes, lambda v: bytes(memoryview(v))),
        (list, lambda v: list(list.__iter__(v))),
        (tuple, lambda v: tuple(tuple.__iter__(v))),
        (dict, lambda v: dict(dict.items(v))),
        (frozenset, lambda v: frozenset(frozenset.__iter__(v))),
        (set, lambda v: set(set.__iter__(v))),
    ):
        if issubclass(t, base):
            return convert(value)
    if t.__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(t, "__next__") and hasattr(t, "__iter__"):
        items = []
        for item in value:
            if len(items) >= MAX_ITEMS:
                raise ValueError(f"an iterator with more than {MAX_ITEMS} items cannot be passed")
            items.append(item)
        return ["__fem_iterator__", items]
    return None


def encode(value, opaque, depth=0):
    """``value`` as JSON-able data: scalars as themselves, containers as ``[tag, payload]``; an object of no
    builtin kind goes to ``opaque`` (which returns a handle, or raises)."""
    t = type(value)
    if t in _SCALARS:
        return value
    if depth > MAX_DEPTH:
        raise ValueError("a value nested too deeply cannot be passed")
    d = depth + 1
    if t in _PLAIN:
        return [_PLAIN[t], [encode(x, opaque, d) for x in value]]
    if t is dict:
        return ["d", [[encode(k, opaque, d), encode(v, opaque, d)] for k, v in value.items()]]
    if t is complex:
        return ["c", [value.real, value.imag]]
    if t is bytes or t is bytearray:
        return ["b" if t is bytes else "B", value.decode("latin-1")]
    if t is range:
        return ["r", [value.start, value.stop, value.step]]
    if t is _KEYS or t is _VALUES:
        return ["k" if t is _KEYS else "v", [encode(x, opaque, d) for x in value]]
    if t is _ITEMS:
        return ["i", [[encode(k, opaque, d), encode(v, opaque, d)] for k, v in value]]
    decimal, fractions = sys.modules.get("decimal"), sys.modules.get("fractions")
    if decimal is not None and t is decimal.Decimal:
        return ["D", str(value)]
    if fractions is not None and t is fractions.Fraction:
        return ["Q", [value.numerator, value.denominator]]
    if t is Remote:
        return object.__getattribute__(value, "_fem_target")
    plain = _as_builtin(value)
    if type(plain) is list and plain[:1] == ["__fem_iterator__"]:
        return ["it", [encode(x, opaque, d) for x in plain[1]]]
    if plain is not None:
        return encode(plain, opaque, depth)
    return opaque(value)


def _pairs(body):
    if not all(type(p) is list and len(p) == 2 for p in body):
        raise ProgramError("malformed mapping")
    return body


def decode(data, resolve):
    """Builtin objects (and, through ``resolve``, handles) from ``encode``'s output; anything malformed raises."""
    if type(data) in _SCALARS:
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise ProgramError(f"malformed value {str(data)[:80]!r}")
    tag, body = data
    if tag in ("h", "n"):
        return resolve(tag, body)
    if tag in ("c", "r", "Q"):
        sizes = {"c": 2, "r": 3, "Q": 2}
        if type(body) is not list or len(body) != sizes[tag] or not all(type(x) in (int, float) for x in body):
            raise ProgramError("malformed number")
        if tag == "c":
            return complex(body[0], body[1])
        if not all(type(x) is int for x in body):
            raise ProgramError("malformed number")
        return range(*body) if tag == "r" else __import__("fractions").Fraction(body[0], body[1])
    if type(body) is str:
        if tag == "D":
            return __import__("decimal").Decimal(body)
        if tag in ("b", "B"):
            raw = body.encode("latin-1")
            return raw if tag == "b" else bytearray(raw)
        raise ProgramError(f"malformed value tag {tag!r}")
    if type(body) is not list:
        raise ProgramError("malformed container")
    if tag in ("d", "i"):
        pairs = {decode(k, resolve): decode(v, resolve) for k, v in _pairs(body)}
        return pairs if tag == "d" else pairs.items()
    items = [decode(x, resolve) for x in body]
    kinds = {"l": list, "t": tuple, "s": set, "f": frozenset, "it": iter}
    if tag in kinds:
        return kinds[tag](items)
    if tag == "k":
        return dict.fromkeys(items).keys()
    if tag == "v":
        return dict(enumerate(items)).values()
    raise ProgramError(f"malformed value tag {tag!r}")


# ----- framing: 4-byte length, then JSON -----------------------------------------------------------------------
def send(fd, message):
    data = json.dumps(message, separators=(",", ":")).encode("ascii")
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(fd):
    """The next message, or None at end of input."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_MESSAGE:
        raise ProgramError(f"a message of {size} bytes is over the {MAX_MESSAGE} limit")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


# ----- harness side ----------------------------------------------------------------------------------------------
class Channel:
    """The harness's end of the pipes to the candidate."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.remotes = rfd, wfd, {}

    def _reply(self):
        try:
            reply = recv(self.rfd)
        except ValueError as exc:
            raise ProgramError(f"malformed reply from the program: {exc}") from None
        if reply is None:
            raise ProgramError("the program ended before the tests finished")
        if type(reply) is not dict:
            raise ProgramError("malformed reply from the program")
        return reply

    def wait_ready(self):
        if self._reply().get("ready") is not True:
            raise ProgramError("malformed first message from the program")

    def request(self, message):
        send(self.wfd, message)
        reply = self._reply()
        if "ok" in reply:
            return decode(reply["ok"], self.resolve)
        raised = reply.get("raise")
        if type(raised) is not list or len(raised) != 2 or not all(type(x) is str for x in raised):
            raise ProgramError("malformed reply from the program")
        name, text = raised
        cls = getattr(builtins, name, None) if name.isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, StopIteration):
            try:
                exc = cls(text)
            except Exception:
                exc = ProgramError(f"{name}: {text}")
        else:
            exc = ProgramError(f"{name}: {text}")
        raise exc

    def resolve(self, tag, body):
        if tag != "h" or type(body) is not int:
            raise ProgramError("malformed handle")
        if body not in self.remotes:
            self.remotes[body] = Remote(self, ["h", body])
        return self.remotes[body]

    def encode(self, value):
        def refuse(obj):
            raise TypeError(f"the tests passed a {type(obj).__name__} to the program: only plain values cross")

        return encode(value, refuse)


class Remote:
    """An object of the program's, seen from the tests: calls, attribute reads and writes go to the program;
    equality and hashing are identity (the program's ``__eq__`` is never consulted)."""

    __slots__ = ("_fem_channel", "_fem_target")

    def __init__(self, channel, target):
        object.__setattr__(self, "_fem_channel", channel)
        object.__setattr__(self, "_fem_target", target)

    def __call__(self, *args, **kwargs):
        ch = self._fem_channel
        return ch.request(
            {
                "op": "call",
                "target": self._fem_target,
                "args": [ch.encode(a) for a in args],
                "kwargs": [[k, ch.encode(v)] for k, v in kwargs.items()],
            }
        )

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._fem_channel.request({"op": "getattr", "target": self._fem_target, "name": name})

    def __setattr__(self, name, value):
        ch = self._fem_channel
        ch.request({"op": "setattr", "target": self._fem_target, "name": name, "value": ch.encode(value)})

    def __repr__(self):
        return f"<program object {self._fem_target[1]!r}>"


def run_harness(spec):
    rfd, wfd, vfd = spec["fds"]
    with open("suite.json", encoding="utf-8") as f:
        suite = json.load(f)
    channel = Channel(rfd, wfd)
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(suite["prelude"], "prelude.py", "exec"), ns)
    channel.wait_ready()
    for name in suite["names"]:
        ns[name] = Remote(channel, ["n", name])
    exec(compile(suite["code"], "tests.py", "exec"), ns)
    send(wfd, {"op": "exit"})
    os.write(vfd, b"ok")


# ----- candidate side --------------------------------------------------------------------------------------------
def serve(ns, rfd, wfd):
    """Answer the harness until it says exit (or its end closes); the program's exceptions go back as replies."""
    handles = []

    def opaque(obj):
        handles.append(obj)
        return ["h", len(handles) - 1]

    def resolve(tag, body):
        if tag == "h" and type(body) is int and 0 <= body < len(handles):
            return handles[body]
        if tag == "n" and type(body) is str:
            if body in ns:
                return ns[body]
            if hasattr(builtins, body):
                return getattr(builtins, body)
            raise NameError(f"name {body!r} is not defined")
        raise ProgramError("malformed handle")

    send(wfd, {"ready": True})
    while True:
        message = recv(rfd)
        if type(message) is not dict or message.get("op") == "exit":
            return
        try:
            target, op = decode(message["target"], resolve), message["op"]
            if op == "call":
                args = [decode(a, resolve) for a in message["args"]]
                kwargs = {str(k): decode(v, resolve) for k, v in message["kwargs"]}
                result = target(*args, **kwargs)
            elif op == "getattr":
                result = getattr(target, str(message["name"]))
            elif op == "setattr":
                result = setattr(target, str(message["name"]), decode(message["value"], resolve))
            else:
                raise ProgramError(f"unknown request {op!r}")
            reply = {"ok": encode(result, opaque)}
        except Exception as exc:  # the program's own failure: the tests see it as an exception
            try:
                text = str(exc)[:2000]
            except Exception:
                text = ""
            sys.stderr.write(f"program raised {type(exc).__name__}: {text}\n")
            reply = {"raise": [str(type(exc).__name__), text]}
        send(wfd, reply)

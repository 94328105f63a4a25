"""fem.sandbox.protocol in-process: values cross as builtin data only (the tests never hold the program's objects),
malformed data is refused, and the harness's proxies call the program's objects over pipes."""

import collections
import decimal
import enum
import fractions
import math
import os
import threading

import pytest

from fem.sandbox.protocol import Channel, ProgramError, Remote, decode, encode, serve


def refuse(obj):
    raise TypeError(f"opaque {type(obj).__name__}")


def no_handles(tag, body):
    raise ProgramError("no handles here")


def roundtrip(value):
    return decode(encode(value, refuse), no_handles)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -5,
        10**5000,
        1.5,
        -0.0,
        math.inf,
        "é\ud800",
        b"\x00\xff",
        bytearray(b"ab"),
        [1, [2, (3,)]],
        (1,),
        {1: "a", (1, 2): [3], None: {4}},
        {1, 2},
        frozenset({"a"}),
        complex(1, -2),
        range(1, 10, 2),
        decimal.Decimal("1.10"),
        fractions.Fraction(1, 3),
    ],
    ids=lambda v: type(v).__name__,
)
def test_builtin_values_cross_unchanged(value):
    back = roundtrip(value)
    assert type(back) is type(value) and back == value
    assert back is not value or type(value) in (type(None), bool, int, float, str)


def test_nan_views_and_iterators_cross():
    assert math.isnan(roundtrip(math.nan))
    d = {"a": 1, "b": 2}
    assert roundtrip(d.keys()) == {"a", "b"} and type(roundtrip(d.keys())) is type(d.keys())
    assert roundtrip(d.items()) == d.items() and list(roundtrip(d.values())) == [1, 2]
    assert list(roundtrip(x * x for x in range(4))) == [0, 1, 4, 9]
    assert list(roundtrip(map(str, [1, 2]))) == ["1", "2"]


def test_subclasses_of_builtins_cross_as_their_plain_content():
    Point = collections.namedtuple("Point", "x y")

    class Color(enum.IntEnum):
        RED = 1

    class Liar(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    for value, plain in [
        (Point(1, 2), (1, 2)),
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (collections.OrderedDict(a=1), {"a": 1}),
        (collections.defaultdict(list, a=[1]), {"a": [1]}),
        (Color.RED, 1),
        (Liar(7), 7),
    ]:
        back = roundtrip(value)
        assert type(back) is type(plain) and back == plain
    assert roundtrip(Liar(7)) != 8  # the program's __eq__ did not cross


def test_other_objects_become_handles_that_compare_by_identity():
    class Anything:
        def __eq__(self, other):
            return True

    handles = []

    def opaque(obj):
        handles.append(obj)
        return ["h", len(handles) - 1]

    data = encode([Anything(), 3], opaque)
    assert data == ["l", [["h", 0], 3]] and isinstance(handles[0], Anything)
    channel = Channel(-1, -1)
    back = decode(data, channel.resolve)
    assert isinstance(back[0], Remote) and back[0] != 1 and back[0] != back[1] and back[0] == back[0]
    assert decode(["h", 0], channel.resolve) is back[0]
    with pytest.raises(AttributeError):
        back[0].__len__  # noqa: B018 (dunder lookups never reach the program)


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1},
        ["x", 1],
        ["l"],
        ["l", "abc"],
        ["d", [[1]]],
        ["c", ["a", 1]],
        ["r", [1.5, 2, 1]],
        ["Q", [1]],
        ["h", "0"],
        ["n", 3],
        ["b", 3],
    ],
)
def test_malformed_data_is_refused(data):
    with pytest.raises((ProgramError, TypeError, ValueError)):
        decode(data, Channel(-1, -1).resolve)


def test_deep_nesting_is_refused():
    value: list = []
    for _ in range(500):
        value = [value]
    with pytest.raises(ValueError, match="nested too deeply"):
        encode(value, refuse)


def test_the_tests_only_pass_plain_values():
    with pytest.raises(TypeError, match="only plain values"):
        Channel(-1, -1).encode([lambda: 1])


def test_proxies_call_the_programs_objects_over_pipes():
    class Node:
        def __init__(self, value):
            self.value, self.left = value, None

    def depth(node):
        return 0 if node is None else 1 + depth(node.left)

    def boom():
        raise KeyError("k")

    ns = {"Node": Node, "depth": depth, "boom": boom, "twice": lambda x: [x, x]}
    to_program, from_program = os.pipe(), os.pipe()
    server = threading.Thread(target=serve, args=(ns, to_program[0], from_program[1]), daemon=True)
    server.start()
    channel = Channel(from_program[0], to_program[1])
    channel.wait_ready()
    remote = {name: Remote(channel, ["n", name]) for name in ns}
    root = remote["Node"](1)
    root.left = remote["Node"](2)
    assert remote["depth"](root) == 2 and root.left.value == 2 and remote["twice"]((1,)) == [(1,), (1,)]
    with pytest.raises(KeyError):
        remote["boom"]()
    with pytest.raises(NameError):
        Remote(channel, ["n", "missing"])()
    from fem.sandbox.protocol import send

    send(to_program[1], {"op": "exit"})
    server.join(timeout=5)
    assert not server.is_alive()
    for fd in (*to_program, *from_program):
        os.close(fd)

"""Scenario 6 of issue 5: properties of the payload codec and of argument validation
(Hypothesis; no Redis).

* Any arguments ``defer`` accepts come back equal in the worker: ``Job.encode_args``
  then ``Job.decode_call`` is the identity on accepted values, for every type the docs
  list (docs/concepts/jobs.md), over the whole domain of each type.
* Anything refused raises ``asyncjobs.ArgumentError`` naming the job and the argument
  (``exc.argument`` and the message), whatever the parameter is called.
* The payload codec round-trips every payload, and the in-flight field the fetch script
  derives from an encoded payload is its jid.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import inspect
import keyword
import math
import unicodedata
import uuid
from decimal import Decimal
from typing import Any, Literal, TypedDict

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncjobs
from asyncjobs._payload import DECODER, ENCODER, Payload, inflight_field, new_jid, valid_jid

Kind = Any  # inspect._ParameterKind, which is private
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Size(enum.Enum):
    THUMB = "thumb"
    LARGE = "large"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = ""


class Box(msgspec.Struct):
    corner: Point
    tags: list[str]


class Options(TypedDict):
    name: str
    retries: int


def make_job(params: list[tuple[str, Any, Kind]]) -> asyncjobs.Job[Any, Any]:
    """A job whose signature is ``params``: (name, annotation, kind), no defaults."""
    return _make_job(tuple(params))


@functools.lru_cache(maxsize=512)
def _make_job(params: tuple[tuple[str, Any, Kind], ...]) -> asyncjobs.Job[Any, Any]:

    async def fn(*args: Any, **kwargs: Any) -> None:
        return None

    parameters = []
    annotations: dict[str, Any] = {"return": None}
    for pname, annotation, kind in params:
        parameters.append(inspect.Parameter(pname, kind, annotation=annotation))
        if annotation is not inspect.Parameter.empty:
            annotations[pname] = annotation
    fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    app = asyncjobs.App("redis://127.0.0.1:1/0")
    return app.job(name="tests.prop.job")(fn)


def same(a: Any, b: Any) -> bool:
    """Equality, with NaN equal to NaN (float and Decimal), -0.0 apart from 0.0, and
    types compared too (a tuple that comes back a list is not the same value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Decimal):
        return bool((a.is_nan() and b.is_nan()) or a == b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return bool(a.keys() == b.keys()) and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return same(dataclasses.asdict(a), dataclasses.asdict(b))
    if isinstance(a, msgspec.Struct):
        return same(msgspec.structs.asdict(a), msgspec.structs.asdict(b))
    if isinstance(a, dt.datetime) and a.tzinfo is not None and b.tzinfo is not None:
        # The same instant; Python calls aware datetimes in a DST fold or gap unequal
        # across zones, whatever their instant, so compare in UTC.
        return bool(a.astimezone(dt.UTC) == b.astimezone(dt.UTC))
    return bool(a == b)


# Values of JSON's own types: what a parameter without a hint accepts.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
# Every str Python can hold, lone surrogates included (os.fsdecode of a file name that
# is not UTF-8 gives one, for instance).
any_text = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr))
# RFC 3339 (the JSON form of datetimes) carries UTC offsets to the minute, so offsets
# with seconds (only historical local mean times have them) are documented as rounded
# (docs/concepts/jobs.md); the property covers whole-minute offsets, and zone dates from
# 1972 on, when every zone's offset is whole minutes.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)
zones = st.none() | offsets | st.timezones()
finite = st.floats(allow_nan=False, allow_infinity=False)
points = st.builds(Point, st.integers(), finite, st.text())

# (annotation, strategy of values of that type): every type docs/concepts/jobs.md lists.
CASES: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "int": (int, st.integers()),
    "float": (float, st.floats()),
    "str": (str, any_text),
    "bool": (bool, st.booleans()),
    "bytes": (bytes, st.binary()),
    "none": (type(None), st.none()),
    "datetime": (
        dt.datetime,
        st.datetimes(min_value=dt.datetime(1972, 1, 1), timezones=zones),  # type: ignore[arg-type]
    ),
    "date": (dt.date, st.dates()),
    "time": (dt.time, st.times(timezones=st.none() | offsets)),
    "timedelta": (dt.timedelta, st.timedeltas()),
    "uuid": (uuid.UUID, st.uuids()),
    "decimal": (Decimal, st.decimals()),
    "enum": (Size, st.sampled_from(Size)),
    "intenum": (Level, st.sampled_from(Level)),
    "literal": (Literal["a", "b", 3], st.sampled_from(["a", "b", 3])),
    "list": (list[int], st.lists(st.integers())),
    "tuple": (tuple[int, str], st.tuples(st.integers(), st.text())),
    "vartuple": (tuple[float, ...], st.lists(finite).map(tuple)),
    "set": (set[str], st.sets(st.text())),
    "frozenset": (frozenset[int], st.frozensets(st.integers())),
    "dict": (dict[str, float], st.dictionaries(st.text(), finite)),
    "intkeys": (dict[int, str], st.dictionaries(st.integers(), st.text())),
    "optional": (int | None, st.none() | st.integers()),
    "union": (int | str, st.integers() | st.text()),
    "dataclass": (Point, points),
    "struct": (Box, st.builds(Box, points, st.lists(st.text()))),
    "typeddict": (Options, st.fixed_dictionaries({"name": st.text(), "retries": st.integers()})),
    "nested": (
        list[dict[str, list[int]]],
        st.lists(
            st.dictionaries(st.text(), st.lists(st.integers(), max_size=4), max_size=3), max_size=3
        ),
    ),
    "untyped": (inspect.Parameter.empty, json_values),
}

P = inspect.Parameter


def _round_trip(
    job: asyncjobs.Job[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Encode and decode; None when refused (then the refusal must name an argument)."""
    names = set(inspect.signature(job.fn).parameters)
    try:
        raw = job.encode_args(args, kwargs)
    except asyncjobs.ArgumentError as exc:
        assert exc.job == job.name and job.name in str(exc)
        assert exc.argument in names, f"refused without naming the argument: {exc}"
        assert exc.argument is not None and exc.argument in str(exc)
        return None
    # What the worker does with the stored arguments.
    decoded = job.decode_call(msgspec.Raw(raw))
    # And through a whole payload, as it travels.
    payload = Payload(
        jid=new_jid(), job=job.name, queue="q", args=msgspec.Raw(raw), created_at=1.0, retry=0
    )
    again = job.decode_call(DECODER.decode(ENCODER.encode(payload)).args)
    assert same(list(again[0]), list(decoded[0])) and same(again[1], decoded[1])
    return decoded


@pytest.mark.parametrize("case", list(CASES))
@settings(SETTINGS, max_examples=50)  # per type: 29 types
@given(data=st.data())
def test_accepted_arguments_round_trip(case: str, data: st.DataObject) -> None:
    """Positional, keyword-only, *args and **kwargs parameters of one type."""
    annotation, values = CASES[case]
    job = make_job(
        [
            ("first", annotation, P.POSITIONAL_OR_KEYWORD),
            ("rest", annotation, P.VAR_POSITIONAL),
            ("only", annotation, P.KEYWORD_ONLY),
            ("extra", annotation, P.VAR_KEYWORD),
        ]
    )
    first = data.draw(values, "first")
    rest = tuple(data.draw(st.lists(values, max_size=3), "rest"))
    only = data.draw(values, "only")
    extra = data.draw(
        st.dictionaries(
            st.text(min_size=1).filter(lambda k: k not in ("first", "rest", "only", "extra")),
            values,
            max_size=3,
        ),
        "extra",
    )
    got = _round_trip(job, (first, *rest), {"only": only, **extra})
    if got is None:
        return
    args, kwargs = got
    assert same(list(args), [first, *rest]), (args, (first, *rest))
    assert same(kwargs, {"only": only, **extra}), (kwargs, {"only": only, **extra})


# -- refusals --------------------------------------------------------------------------

# Values of one type that msgspec never converts to the other types used below.
WRONG: dict[Any, st.SearchStrategy[Any]] = {
    int: any_text | st.none() | st.floats() | st.lists(st.integers(), min_size=1),
    str: st.integers() | st.none() | st.floats() | st.lists(st.text()),
    float: any_text | st.none() | st.booleans() | st.lists(st.floats()),
    bool: st.integers() | any_text | st.none(),
    list[int]: st.integers() | st.lists(st.text(), min_size=1) | st.none(),
    dict[str, int]: st.integers() | st.dictionaries(st.text(), st.text(), min_size=1),
}
RIGHT: dict[Any, st.SearchStrategy[Any]] = {
    int: st.integers(),
    str: st.text(),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    list[int]: st.lists(st.integers(), max_size=3),
    dict[str, int]: st.dictionaries(st.text(), st.integers(), max_size=3),
}


def _identifier(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
    )


ascii_names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(_identifier)
any_names = st.text(
    st.characters(categories=["Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Nd", "Pc"]),
    min_size=1,
    max_size=8,
).filter(_identifier)


def _signature(data: st.DataObject, names: st.SearchStrategy[str]) -> list[tuple[str, Any, Kind]]:
    pnames = data.draw(st.lists(names, min_size=1, max_size=4, unique=True), "names")
    kinds = data.draw(
        st.lists(
            st.sampled_from([P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY]),
            min_size=len(pnames),
            max_size=len(pnames),
        ).map(sorted),
        "kinds",
    )
    types = data.draw(
        st.lists(st.sampled_from(list(RIGHT)), min_size=len(pnames), max_size=len(pnames)),
        "types",
    )
    return list(zip(pnames, types, kinds, strict=True))


def _call(
    data: st.DataObject, params: list[tuple[str, Any, Kind]], values: list[Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Pass each value positionally or by keyword (keyword-only ones by keyword)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    by_keyword = False
    for (pname, _, kind), value in zip(params, values, strict=True):
        if kind is P.KEYWORD_ONLY or by_keyword or data.draw(st.booleans(), f"kw {pname}"):
            by_keyword = True
            kwargs[pname] = value
        else:
            args.append(value)
    return tuple(args), kwargs


def _check_refusal(
    job: asyncjobs.Job[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], culprit: str
) -> None:
    with pytest.raises(asyncjobs.ArgumentError) as info:
        job.encode_args(args, kwargs)
    exc = info.value
    assert job.name in str(exc), str(exc)
    assert repr(culprit) in str(exc), f"the message does not name {culprit!r}: {exc}"
    assert exc.argument == culprit, f"exc.argument is {exc.argument!r}, not {culprit!r}: {exc}"


def _wrong_type_refused(data: st.DataObject, names: st.SearchStrategy[str]) -> None:
    params = _signature(data, names)
    values = [data.draw(RIGHT[t], f"value {n}") for n, t, _ in params]
    i = data.draw(st.integers(0, len(params) - 1), "culprit")
    culprit, tp, _ = params[i]
    values[i] = data.draw(WRONG[tp], f"wrong {culprit}")
    job = make_job(params)
    args, kwargs = _call(data, params, values)
    _check_refusal(job, args, kwargs, culprit)


@SETTINGS
@given(data=st.data())
def test_wrong_type_is_refused_naming_the_argument(data: st.DataObject) -> None:
    _wrong_type_refused(data, ascii_names)


@SETTINGS
@given(data=st.data())
def test_wrong_type_is_refused_naming_the_argument_whatever_its_name(
    data: st.DataObject,
) -> None:
    """Python identifiers are Unicode (PEP 3131): ``größe``, ``名前``, ``ü``."""
    _wrong_type_refused(data, any_names)


@SETTINGS
@given(data=st.data())
def test_missing_argument_is_refused_naming_it(data: st.DataObject) -> None:
    params = _signature(data, ascii_names)
    values = [data.draw(RIGHT[t], f"value {n}") for n, t, _ in params]
    i = data.draw(st.integers(0, len(params) - 1), "missing")
    culprit = params[i][0]
    # Omit it: positionally, that is only possible for the last positional parameter,
    # so pass everything by keyword.
    kwargs = {n: v for (n, _, _), v in zip(params, values, strict=True) if n != culprit}
    _check_refusal(make_job(params), (), kwargs, culprit)


@SETTINGS
@given(data=st.data())
def test_unknown_keyword_is_refused_naming_it(data: st.DataObject) -> None:
    params = _signature(data, ascii_names)
    values = [data.draw(RIGHT[t], f"value {n}") for n, t, _ in params]
    stray = data.draw(ascii_names.filter(lambda n: n not in {p[0] for p in params}), "stray")
    args, kwargs = _call(data, params, values)
    kwargs[stray] = data.draw(st.integers(), "stray value")
    _check_refusal(make_job(params), args, kwargs, stray)


# -- the payload codec -----------------------------------------------------------------

jids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True) | st.builds(new_jid)
payloads = st.fixed_dictionaries(
    {
        "jid": jids,
        "job": st.text(),
        "queue": st.text(min_size=1),
        "args": json_values.filter(lambda v: not _has_nan(v)).map(
            lambda v: msgspec.Raw(msgspec.json.encode(v))
        ),
        "created_at": finite,
        "enqueued_at": st.none() | finite,
        "at": st.none() | finite,
        "retry": st.integers(0, 100),
        "retry_count": st.integers(0, 100),
        "timeout": st.none() | finite,
        "dead": st.booleans(),
        "error_class": st.none() | st.text(),
        "error_message": st.none() | st.text(),
        "error_backtrace": st.none() | st.lists(st.text()),
        "failed_at": st.none() | finite,
        "retried_at": st.none() | finite,
        "recoveries": st.integers(0, 10),
        "meta": st.dictionaries(st.text(), json_values.filter(lambda v: not _has_nan(v))),
    }
).map(lambda fields: _payload(fields))


def _payload(fields: dict[str, Any]) -> Payload:
    return Payload(**fields)


def _has_nan(v: Any) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, list):
        return any(_has_nan(x) for x in v)
    if isinstance(v, dict):
        return any(_has_nan(x) for x in v.values())
    return False


@SETTINGS
@given(payloads)
def test_payload_round_trips_and_its_inflight_field_is_the_jid(payload: Payload) -> None:
    raw = ENCODER.encode(payload)
    back = DECODER.decode(raw)
    assert back == payload
    assert valid_jid(payload.jid)
    assert inflight_field(raw) == payload.jid.encode()
    assert raw.startswith(b'{"jid":"'), "scripts read the jid from this prefix"


def test_every_case_registers() -> None:
    """A guard for this module: msgspec supports every annotation of ``CASES``."""
    for annotation, _ in CASES.values():
        make_job([("first", annotation, P.POSITIONAL_OR_KEYWORD)])

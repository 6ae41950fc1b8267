"""The sender's scrub verdicts (``RecordEncoder.encode_checked``, ``Scrubber.clean_payload``).

The sender scrubs a clean event without decoding it: the encoder asks the scrubber about the
values the event is made of, and only an event not known clean is decoded and scrubbed. The
promise checked here: whenever the verdict is "clean", scrubbing the encoded bytes the old
way (``scrub_encoded``) returns them unchanged with nothing replaced, for every kind of
record and every kind of value (secrets anywhere, keys holding secrets, Unicode lookalike
keys, values whose JSON form differs from the object: dataclasses, enums, str and dict
subclasses, non-str keys, big ints, NaN under a sensitive key, lone surrogates, deep
nesting, cut summaries, oversized payloads); and the counters of ``stats()`` come out the
same either way. The common clean events do get the verdict (else the fast path is gone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from hiveloop_async import Agent, HiveBoard
from hiveloop_async._scrub import Scrubber
from hiveloop_async._serialize import RecordEncoder
from hiveloop_async.testing import capture_events

_ALNUM = "A1b2C3d4E5f6G7h8J9k0"
OPENAI = "sk-" + "proj-" + _ALNUM * 2
BEARER = "Bearer " + "4f2a9c1e8b7d6a5f4e3d2c1b"
AWS = "AK" + "IA" + "IOSFODNN7EXAMPLE"
URL_PW = "postgresql://app:" + "s3cr3t-Pa55" + "@db.internal:5432/orders"
KELVIN = "\u212a"  # lower-cases to "k": "to\u212aen" is a "token" key


class Str(str):
    pass


class Colour(enum.Enum):
    SECRET = OPENAI


@dataclasses.dataclass
class Creds:
    user: str
    note: str


def _values(rng: random.Random) -> list[Any]:
    """Payload values: clean ones, secrets, and values whose JSON is not the object."""
    clean_long = "the quick brown fox jumps over the lazy dog " * rng.randint(1, 3)
    return [
        "short",
        clean_long,
        "café → ünïcode text that is long enough",
        12,
        3.5,
        True,
        None,
        [1, "two", clean_long],
        ("tuple", clean_long),
        {"nested": {"deeper": clean_long, "n": 1}},
        OPENAI,
        f"header {BEARER} here",
        f"connect to {URL_PW}",
        f"id {AWS}",
        [clean_long, {"k": OPENAI}],
        (1, (2, (BEARER,))),
        Str(OPENAI),
        Str("plain subclass text of some length"),
        OrderedDict(a=OPENAI),
        OrderedDict(a="clean"),
        Colour.SECRET,
        Creds("bob", OPENAI),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        Decimal("1.5"),
        OPENAI.encode(),
        {OPENAI},
        2**70,
        float("nan"),
        "lone \ud800 surrogate " + OPENAI,
        "lone \ud800 surrogate, clean and long",
        {1: OPENAI},
        {1: "clean"},
    ]


def _keys(rng: random.Random) -> list[str]:
    return [
        "query",
        "rows",
        "password",
        "api_key",
        "to" + KELVIN + "en",
        "Set-Cookie",
        "max_tokens",
        "tokens_in",
        "sessionId",
        OPENAI,  # a key that holds a secret
        "auth",
        "author",
    ]


def _payload(rng: random.Random, depth: int = 0) -> Any:
    values = _values(rng)
    keys = _keys(rng)
    out: dict[Any, Any] = {}
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(keys) if rng.random() < 0.4 else f"field_{rng.randint(0, 50)}"
        value = rng.choice(values)
        if depth < 2 and rng.random() < 0.2:
            value = _payload(rng, depth + 1)
        out[key] = value
    return out


def _deep(n: int) -> Any:
    value: Any = "bottom"
    for _ in range(n):
        value = {"d": value}
    return value


SPECIAL_PAYLOADS: list[Any] = [
    {"deep": _deep(70)},
    {"deep": _deep(10)},
    {"summary": "x" * 505 + OPENAI},  # the secret straddles the 512-character cut
    {"summary": "x" * 600},
    {"summary": 12345678901234567890},
    {"big": "y" * 40_000 + " " + OPENAI},  # shrunk: scanned as sent
    {"big": "y" * 40_000},
    {"token": float("nan")},  # null on the wire: not a secret there
    {"token": None, "password": True},
    [OPENAI, "list payload"],
    "a string payload",
    None,
]


def _record_all(agent: Agent, rng: random.Random) -> None:
    """Every kind of record, with random and special payloads and text fields."""

    @agent.track("tracked function")
    def tracked(arg: str) -> str:
        if arg != "clean":
            raise RuntimeError(arg)
        return arg

    def tracked_or_not(arg: str) -> None:
        try:
            tracked(arg)
        except RuntimeError:
            pass

    # Ids with and without a scrubber trigger: a trigger-free id's summaries get their
    # verdict from the id; with one ("bearer", "://"), they are scanned.
    ids: list[Any] = [
        "t-1",
        "a-request-id-0123456789abcdef",
        OPENAI,
        42,
        "task " + BEARER,
        "Bearer",
        "x bearer",
        "postgresql://app:pw",
        "\ud800 lone surrogate id",
    ]
    for i in range(120):
        payload = rng.choice(SPECIAL_PAYLOADS) if i % 5 == 0 else _payload(rng)
        tid = rng.choice(ids)
        with agent.task(
            tid,
            project=rng.choice([None, "proj", URL_PW]),
            type=rng.choice([None, "POST /items/{id}", "lead"]),
            correlation_id=rng.choice([None, "corr-0123456789abcdef", f"c {AWS}"]),
            payload=rng.choice([None, _payload(rng), {"summary": BEARER}, ["not", "a dict"]]),
        ) as t:
            t.event(rng.choice(["custom", "escalated", "not_a_type"]), payload)
            t.llm_call(
                "chat",
                "gpt-4o-mini",
                tokens_in=10,
                tokens_out=5,
                prompt_preview=rng.choice(["what is the capital of France?", OPENAI]),
                metadata=rng.choice([None, _payload(rng)]),
            )
            name = rng.choice(["step", "search the web for things", OPENAI, Str("subname")])
            with agent.track_context(name) as ctx:
                extra = rng.choice([None, _payload(rng), payload])
                if extra is not None:
                    ctx.set_payload(extra)
            tracked_or_not(rng.choice(["clean", OPENAI]))
            try:
                with agent.track_context("failing step"):
                    raise ValueError(rng.choice(["plain failure of a step", f"bad {OPENAI}"]))
            except ValueError:
                pass
            if i % 3 == 0:
                t.fail(payload={"why": rng.choice(["clean reason text here", BEARER])})
        agent.event("custom", rng.choice([None, _payload(rng)]))


def _checked_records(seed: int) -> Iterator[tuple[bool, Any]]:
    client = HiveBoard(api_key="hb_test_x", enabled=False)
    try:
        agent = client.agent("verdict-agent")
        with capture_events() as cap:
            _record_all(agent, random.Random(seed))
        yield from cap._records
    finally:
        client.shutdown(timeout=0)


def _compare(make: Callable[[], Scrubber], seed: int, prebuilt: bool = False) -> tuple[int, int]:
    """Encode every record with verdicts; check each "clean" against the old way.

    ``prebuilt``: the tasks' wire fields were cached by another encoder first (the verdict
    on them is then read back from the fields as sent).
    """
    ref, fast = make(), make()
    enc = RecordEncoder(fast)
    clean_n = total = 0
    records = list(_checked_records(seed))
    if prebuilt:
        other = RecordEncoder()
        for ended, rec in records:
            other.encode_phase(rec, ended)
    for ended, rec in records:
        if type(rec) is not tuple:
            rec.opened = ended
        out = enc.encode_checked(rec)
        assert out is not None
        _, data, clean = out
        total += 1
        sent, n = ref.scrub_encoded(data)
        if clean:
            clean_n += 1
            assert n == 0 and sent is data, orjson.loads(data)
            fast.count_clean()
        else:
            assert fast.scrub_encoded(data) == (sent, n)
    assert fast.stats() == ref.stats()
    return clean_n, total


@pytest.mark.parametrize(("seed", "prebuilt"), [(1, False), (2, False), (3, True), (4, True)])
def test_a_clean_verdict_means_scrubbing_would_change_nothing(seed: int, prebuilt: bool) -> None:
    clean, total = _compare(Scrubber, seed, prebuilt)
    assert total > 1000
    assert 0.1 * total < clean < 0.9 * total  # both verdicts occur, and often


def test_extra_patterns_and_other_text_fields_give_no_verdict() -> None:
    for make in (
        lambda: Scrubber(extra_patterns={"ticket": r"TK-\d+"}),
        lambda: Scrubber(text_fields=("task_id", "status")),
    ):
        assert _compare(make, 5)[0] == 0
    # Extra keys are part of the key verdict: exact, so verdicts stay on.
    clean, _ = _compare(lambda: Scrubber(extra_keys=["field_1", "query"]), 6)
    assert clean > 0


def test_common_sdk_events_are_clean_without_copies_or_decoding() -> None:
    """A task, an action with a payload, an LLM call: each event gets the clean verdict,
    and the user's payload objects are left as they were."""
    client = HiveBoard(api_key="hb_test_x", enabled=False)
    args = {"query": "weather in Paris tomorrow", "limit": 5, "tags": ["a", "b"]}
    before = orjson.dumps(args)
    try:
        agent = client.agent("verdict-agent")

        @agent.track("tracked step")
        def tracked() -> int:  # an action with a function name
            return 1

        with (
            capture_events() as cap,
            agent.task("req-0123456789abcdef0123", type="GET /items/{id}") as t,
        ):
            with agent.track_context("search") as ctx:
                ctx.set_payload({"args": args})
            tracked()
            t.llm_call("chat", "gpt-4o-mini", tokens_in=1, tokens_out=2, metadata=args)
        scrubber = Scrubber()
        enc = RecordEncoder(scrubber)
        verdicts = []
        for ended, rec in cap._records:
            if type(rec) is not tuple:
                rec.opened = ended
            out = enc.encode_checked(rec)
            assert out is not None
            verdicts.append(out[2])
        assert verdicts == [True] * 7
        assert orjson.dumps(args) == before
        assert enc.gives_verdicts
        assert not RecordEncoder().gives_verdicts
        assert not RecordEncoder(Scrubber(extra_patterns={"t": "TK-[0-9]+"})).gives_verdicts
        # A plain encoder (no scrubber) gives no verdict.
        assert RecordEncoder().encode_checked(cap._records[0][1]) is not None
        cap._records[0][1].opened = False
        out = RecordEncoder().encode_checked(cap._records[0][1])
        assert out is not None and out[2] is False
    finally:
        client.shutdown(timeout=0)


def test_the_payload_encoder_says_when_the_json_is_not_the_payload_as_given() -> None:
    """The verdict is only trusted when the JSON is orjson's own of the payload: a cut
    summary, a value converted one by one or a measured (maybe shrunk) payload is not."""
    from hiveloop_async._serialize import _encode_payload, encode_payload

    cases: list[tuple[dict[str, Any], bool]] = [
        ({"summary": "fine", "n": 1, "l": [1, "a"]}, True),
        ({"summary": "x" * 513}, False),
        ({"summary": 12}, False),
        ({"v": 2**70}, False),
        ({"v": "lone \ud800"}, False),
        ({"v": "y" * 9000}, False),
    ]
    for payload, exact in cases:
        data, got = _encode_payload(payload)
        assert got is exact, payload
        assert data == encode_payload(payload)

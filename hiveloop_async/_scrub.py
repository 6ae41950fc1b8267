"""Default scrubbing of secrets in wire events, before anything leaves the process.

A :class:`Scrubber` replaces, in an event about to be sent:

* **values that look like credentials**, wherever they appear in a string (a tool argument,
  an LLM prompt preview, an exception message, a dict key): OpenAI and Anthropic keys
  (``sk-…``, ``sk-ant-…``), HiveBoard keys (``hb_…``), AWS access key ids (``AKIA…``),
  GitHub tokens (``ghp_…``, ``gho_…``, ``ghu_…``, ``ghs_…``, ``ghr_…``, ``github_pat_…``),
  JWTs, ``Bearer …`` credentials, PEM private key blocks and the password of a URL
  (``scheme://user:password@host``);
* **whole values under sensitive keys**, at any depth of the payload: a key whose name,
  lower-cased and without ``_``, ``-``, ``.`` and spaces, is or ends with ``password``,
  ``passwd``, ``secret``, ``token``, ``apikey``, ``authorization``, ``cookie``, ``cookies``,
  ``setcookie``, ``privatekey``, ``accesskey``, ``credentials``, ``passphrase`` (or is
  ``pwd``, ``auth``, ``sessionid``). ``tokens_in``, ``max_tokens`` and ``token_count`` do not
  match: only whole values of sensitive keys are removed, never counts.

Each match is replaced by a marker naming what was removed, ``[REDACTED:openai_key]``,
``[REDACTED:password]``, which never contains any character of the secret.

What is scanned: the whole ``payload`` (keys and values, nested dicts, lists and tuples), and
the top-level string fields users fill with their own text (``task_id``, ``task_type``,
``project_id``, ``correlation_id``; value patterns only). Ids that held a secret are replaced
by the marker in every event, consistently.

Two entry points, both pure CPU work (no I/O, never blocking, never raising for any
JSON-like input):

* :meth:`Scrubber.scrub_event` for an event dict. The dict itself is changed in place (its
  fields are reassigned); nested containers are **never mutated**: a dict or list that holds
  a secret is replaced by a scrubbed copy, so objects shared with the application stay as
  they were, and a clean event costs no copy at all.
* :meth:`Scrubber.scrub_encoded` for one event already encoded as JSON bytes (what the
  sender batches): decoded, scrubbed, and re-encoded only when something was replaced.

The sender avoids the decoding for most events: its encoder asks :meth:`Scrubber.clean_payload`
and :meth:`Scrubber.clean_text` about the values an event is made of (payload, exception
message, action name, the task's text fields as sent) and passes only the events not found
clean to :meth:`~Scrubber.scrub_encoded`. A clean verdict is given only for plain JSON data
(exact dict/list/tuple/str/int/float/bool/None, str keys) encoded as it is, and means exactly
that scrubbing the encoded event would replace nothing; see ``tests/test_scrub_verdict.py``.

The patterns are compiled once per scrubber; strings shorter than the shortest secret, and
strings holding none of the literal prefixes the patterns need, skip the regex entirely.
A scrubber is meant to be used by one sender task at a time (its counters are plain ints).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ._exceptions import HiveLoopConfigError

__all__ = [
    "DEFAULT_TEXT_FIELDS",
    "SENSITIVE_KEYS",
    "Scrubber",
    "make_scrubber",
    "marker",
]

#: Built-in value patterns, in the order they are tried (the more specific ones first).
_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?s:.*?)"
        r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z)",
    ),
    ("bearer_token", r"(?i:bearer)[ \t]+(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{8,}=*"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai_key", r"\bsk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"),
    ("hiveboard_key", r"\bhb_(?=[A-Za-z0-9_]*[0-9])[A-Za-z0-9_]{16,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("url_password", r"(?<=://)[^\s/:@\"']{1,200}:[^\s/@\"']{1,200}(?=@)"),
)

#: Lower-case literals at least one of which every built-in pattern's match contains.
_VALUE_TRIGGERS: tuple[str, ...] = (
    "-----begin",
    "bearer",
    "eyj",
    "sk-",
    "hb_",
    "akia",
    "asia",
    "abia",
    "acca",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "://",  # with "@" (checked apart): a URL with credentials
)
#: No built-in pattern matches fewer characters than this ("Bearer " + 8).
_MIN_SECRET_LEN = 15

#: A key is sensitive when its normalised form (see :func:`_normalise`) ends with one of
#: these, or equals one of :data:`_EXACT_KEYS`.
SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "cookies",
    "setcookie",
    "privatekey",
    "accesskey",
    "credentials",
)
_EXACT_KEYS: tuple[str, ...] = ("pwd", "auth", "sessionid")

#: Top-level string fields scanned with the value patterns (the payload is always scanned).
DEFAULT_TEXT_FIELDS: tuple[str, ...] = ("task_id", "task_type", "project_id", "correlation_id")

#: Strings up to this long found clean are remembered (at most _CLEAN_CACHE_SIZE of them).
_CLEAN_CACHE_LEN = 256
_CLEAN_CACHE_SIZE = 8192

#: Containers nested deeper than this are replaced whole (wire payloads are never so deep).
MAX_DEPTH = 64

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_KEY_STRIP = str.maketrans("", "", "_-. ")


def marker(kind: str) -> str:
    """The text that replaces a secret of ``kind``: ``[REDACTED:kind]``."""
    return f"[REDACTED:{kind}]"


def _normalise(key: str) -> str:
    return key.lower().translate(_KEY_STRIP)


class Scrubber:
    """Finds and replaces secrets in wire events; see the module docstring.

    :param extra_patterns: more value patterns, ``{name: regex}`` (a ``str`` or a compiled
        ``re.Pattern[str]``); a match is replaced by ``[REDACTED:name]``. ``name`` is
        lower-case letters, digits and ``_``.
    :param extra_keys: more sensitive key names, compared normalised (lower case, without
        ``_``, ``-``, ``.`` and spaces); a key matches when its normalised form ends with one.
    :param text_fields: the top-level string fields to scan besides the payload.
    :raises HiveLoopConfigError: for an invalid name or a pattern that does not compile
        (the message names the pattern, never a matched value).
    """

    def __init__(
        self,
        *,
        extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        extra_keys: Iterable[str] | None = None,
        text_fields: Iterable[str] = DEFAULT_TEXT_FIELDS,
    ) -> None:
        parts = [f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS]
        self._value_re = re.compile("|".join(parts))
        extra: list[tuple[str, re.Pattern[str]]] = []
        for name, pattern in (extra_patterns or {}).items():
            if not isinstance(name, str) or _NAME.fullmatch(name) is None:
                raise HiveLoopConfigError(
                    f"scrub pattern name {name!r} must be lower-case letters, digits and _"
                )
            try:
                compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise HiveLoopConfigError(
                    f"scrub pattern {name!r} does not compile: {exc}"
                ) from None
            if not isinstance(compiled.pattern, str):
                raise HiveLoopConfigError(f"scrub pattern {name!r} must be a str pattern")
            extra.append((name, compiled))
        self._extra = tuple(extra)
        # Literal replacements: a name is [a-z0-9_] only, so no backslash or group reference.
        self._extra_markers = {name: marker(name) for name, _ in extra}
        suffixes = list(SENSITIVE_KEYS)
        for key in extra_keys or ():
            if not isinstance(key, str) or not _normalise(key):
                raise HiveLoopConfigError(f"scrub key {key!r} must be a non-empty string")
            suffixes.append(_normalise(key))
        self._key_suffixes = tuple(dict.fromkeys(suffixes))
        self._exact_keys = frozenset(_EXACT_KEYS)
        self._text_fields = tuple(text_fields)
        self._key_cache: dict[str, str | None] = {}
        self._clean: set[str] = set()
        #: Events passed to :meth:`scrub_event` / :meth:`scrub_encoded`.
        self.events = 0
        #: Events in which at least one secret was replaced.
        self.events_scrubbed = 0
        #: Secrets replaced, in total and by kind.
        self.redactions = 0
        self.by_kind: Counter[str] = Counter()

    # -- public --------------------------------------------------------------------------

    def scrub_event(self, event: dict[str, Any]) -> int:
        """Replace the secrets in ``event``; return how many were replaced. Never raises.

        ``event``'s own fields are reassigned in place; nested containers are copied, never
        mutated (see the module docstring). Does not block (pure CPU).
        """
        self.events += 1
        found = 0
        try:
            payload = event.get("payload")
            if payload is not None:
                new, n = self._value(payload, 0)
                if n:
                    event["payload"] = new
                    found += n
            for name in self._text_fields:
                value = event.get(name)
                if type(value) is str:
                    new_s, n = self._string(value)
                    if n:
                        event[name] = new_s
                        found += n
        except Exception:  # an input that is not JSON-like: never let it out unscanned
            event["payload"] = marker("unscannable")
            found += 1
            self.by_kind["unscannable"] += 1
        if found:
            self.events_scrubbed += 1
            self.redactions += found
        return found

    def scrub_encoded(self, data: bytes) -> tuple[bytes, int]:
        """Scrub one JSON-encoded event; return ``(bytes to send, redactions)``.

        Decodes with orjson, scrubs as :meth:`scrub_event` does and re-encodes only when
        something was replaced; otherwise returns ``data`` itself. (A bytes-level prefilter
        to skip the decoding was measured slower: a regex pass over the encoded event costs
        more than orjson's decode plus the walk over its values.) Bytes that are not one JSON
        object are returned unchanged with 0. Does not block (pure CPU); never raises.
        """
        out, _, n = self.scrub_decoding(data)
        return out, n

    def scrub_decoding(self, data: bytes) -> tuple[bytes, dict[str, Any] | None, int]:
        """:meth:`scrub_encoded`, also giving the event it decoded, as scrubbed.

        Returns ``(bytes to send, event, redactions)``: ``event`` is the dict the bytes
        decode to (equal to ``orjson.loads`` of the bytes returned), for a caller that needs
        the event as a dict too (the OTLP span assembler), so that it is decoded once; None
        when ``data`` is not one JSON object. Does not block (pure CPU); never raises.
        """
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if type(event) is not dict:
            self.events += 1
            return data, None, 0
        n = self.scrub_event(event)
        if not n:
            return data, event, 0
        return orjson.dumps(event), event, n

    def stats(self) -> dict[str, Any]:
        """Counters: ``events``, ``events_scrubbed``, ``redactions``, ``by_kind``."""
        return {
            "events": self.events,
            "events_scrubbed": self.events_scrubbed,
            "redactions": self.redactions,
            "by_kind": dict(self.by_kind),
        }

    # -- verdicts without decoding (the sender's fast path) ---------------------------------

    @property
    def checks_text_fields(self) -> tuple[str, ...] | None:
        """The top-level fields :meth:`scrub_event` scans, when :meth:`clean_payload` and
        :meth:`clean_text` give exact verdicts; None when they cannot (extra patterns: the
        sender then scrubs every event through :meth:`scrub_encoded`)."""
        return None if self._extra else self._text_fields

    def clean_payload(self, payload: Any) -> bool:
        """True when :meth:`scrub_event` would replace nothing in an event whose payload is
        the JSON of ``payload``, and ``payload`` is plain JSON data: an exact ``dict`` with
        ``str`` keys, holding exact ``dict``/``list``/``tuple``/``str``/``int``/``float``/
        ``bool``/None only. False otherwise (something to replace, or a value whose JSON
        form would have to be scanned as sent): the caller then scrubs the encoded event.

        Counts nothing and copies nothing (clean strings are remembered, as scrubbing does);
        exact only when :attr:`checks_text_fields` is not None. Does not block; never raises.
        """
        try:
            return type(payload) is dict and self._clean_dict(payload, 0)
        except Exception:
            return False

    def clean_text(self, value: Any) -> bool:
        """True when ``value`` is a ``str`` in which :meth:`scrub_event` would replace
        nothing as a top-level text field (or as a list item). Counts nothing (see
        :meth:`clean_payload`). Does not block; never raises."""
        if type(value) is not str:
            return False
        if len(value) < _MIN_SECRET_LEN or value in self._clean:
            return True
        return self._clean_string(value)

    def trigger_free(self, value: str) -> bool:
        """True when ``value`` holds none of the literals every built-in pattern's match
        contains (``"://"`` counted even without ``"@"``). No built-in match spans a space
        and none of those literals does, so a string made of ``value`` and space-separated
        words holding none of them (``"Task {id} started"``) has nothing to replace either.
        Exact only when :attr:`checks_text_fields` is not None. Does not block; never raises.
        """
        low = value.lower()
        for trigger in _VALUE_TRIGGERS:  # noqa: SIM110 (a loop: no generator per call)
            if trigger in low:
                return False
        return True

    def count_clean(self) -> None:
        """Count one event found clean by :meth:`clean_payload` and :meth:`clean_text`
        without being passed to :meth:`scrub_event` (``stats()["events"]``)."""
        self.events += 1

    # -- internals -----------------------------------------------------------------------

    def _key_kind(self, key: Any) -> str | None:
        """``""`` for a clean key, the kind for a sensitive one, None for one holding a secret.

        Clean and sensitive keys are cached (a key holding a secret never is).
        """
        if type(key) is not str:
            return ""
        if self._holds_secret(key):
            return None
        kind = self._sensitive_kind(key)
        if len(self._key_cache) < 4096:
            self._key_cache[key] = kind
        return kind

    def _sensitive_kind(self, key: str) -> str:
        """The kind of secret a value under ``key`` is, or ``""``."""
        norm = _normalise(key)
        if norm in self._exact_keys:
            return norm
        for suffix in self._key_suffixes:
            if norm.endswith(suffix):
                return suffix
        return ""

    def _string(self, s: str) -> tuple[str, int]:
        found = 0
        size = len(s)
        if size >= _MIN_SECRET_LEN and not (size <= _CLEAN_CACHE_LEN and s in self._clean):
            low = s.lower()
            for trigger in _VALUE_TRIGGERS:
                if trigger in low:
                    if trigger == "://" and "@" not in low:
                        continue
                    s, found = self._value_re.subn(self._replace, s)
                    break
            if not found and size <= _CLEAN_CACHE_LEN:
                self._remember_clean(s)  # names, summaries and ids repeat from event to event
        for name, regex in self._extra:
            s, n = regex.subn(self._extra_markers[name], s)
            if n:
                self.by_kind[name] += n
                found += n
        return s, found

    def _holds_secret(self, s: str) -> bool:
        """Whether :meth:`_string` would replace something in ``s`` (counts nothing)."""
        if len(s) >= _MIN_SECRET_LEN:
            low = s.lower()
            for trigger in _VALUE_TRIGGERS:
                if trigger in low and (trigger != "://" or "@" in low):
                    if self._value_re.search(s) is not None:
                        return True
                    break
        return any(regex.search(s) is not None for _, regex in self._extra)

    def _clean_string(self, s: str) -> bool:
        """Built-in patterns only (no extras): whether :meth:`_string` would find nothing."""
        low = s.lower()
        for trigger in _VALUE_TRIGGERS:
            if trigger in low:
                if trigger == "://" and "@" not in low:
                    continue
                if self._value_re.search(s) is not None:
                    return False
                break
        if len(s) <= _CLEAN_CACHE_LEN:
            self._remember_clean(s)
        return True

    def _remember_clean(self, s: str) -> None:
        """Remember a clean string; a full cache starts over (one-off strings such as
        request ids and their summaries would otherwise fill it for good)."""
        clean = self._clean
        if len(clean) >= _CLEAN_CACHE_SIZE:
            clean.clear()
        clean.add(s)

    def _clean_dict(self, value: dict[Any, Any], depth: int) -> bool:
        """:meth:`_dict` as a verdict: True when it would replace nothing (plain data only)."""
        if depth >= MAX_DEPTH:
            return False
        key_cache = self._key_cache
        clean = self._clean
        for key, item in value.items():
            kind = key_cache.get(key)
            if kind is None:
                if type(key) is not str:
                    return False
                kind = self._key_kind(key)
                if kind is None:
                    return False
            t = type(item)
            if kind:  # a sensitive key: clean only when its value is None or a bool
                if item is None or t is bool:
                    continue
                return False
            if t is str:
                if len(item) < _MIN_SECRET_LEN or item in clean or self._clean_string(item):
                    continue
                return False
            if t is int or t is float or t is bool or item is None:
                continue
            if t is dict:
                if self._clean_dict(item, depth + 1):
                    continue
            elif (t is list or t is tuple) and self._clean_list(item, depth + 1):
                continue
            return False
        return True

    def _clean_list(self, value: list[Any] | tuple[Any, ...], depth: int) -> bool:
        """:meth:`_value` on a list or tuple, as a verdict (plain data only)."""
        if depth >= MAX_DEPTH:
            return False
        clean = self._clean
        for item in value:
            t = type(item)
            if t is str:
                if len(item) < _MIN_SECRET_LEN or item in clean or self._clean_string(item):
                    continue
                return False
            if t is int or t is float or t is bool or item is None:
                continue
            if t is dict:
                if self._clean_dict(item, depth + 1):
                    continue
            elif (t is list or t is tuple) and self._clean_list(item, depth + 1):
                continue
            return False
        return True

    def _replace(self, m: re.Match[str]) -> str:
        kind = m.lastgroup or "secret"
        self.by_kind[kind] += 1
        return _MARKERS.get(kind) or marker(kind)

    def _value(self, value: Any, depth: int) -> tuple[Any, int]:
        """(scrubbed value, redactions); the same object when nothing was found."""
        t = type(value)
        if t is str:
            return self._string(value)
        if t is dict or isinstance(value, dict):
            return self._dict(value, depth)
        if t is list or t is tuple or isinstance(value, (list, tuple)):
            if depth >= MAX_DEPTH:
                self.by_kind["too_deep"] += 1
                return marker("too_deep"), 1
            out: list[Any] | None = None
            total = 0
            for i, item in enumerate(value):
                new, n = self._value(item, depth + 1)
                if n:
                    if out is None:
                        out = list(value)
                    out[i] = new
                    total += n
            if out is None:
                return value, 0
            return (tuple(out) if t is tuple else out), total
        return value, 0

    def _dict(self, value: dict[Any, Any], depth: int) -> tuple[Any, int]:
        if depth >= MAX_DEPTH:
            self.by_kind["too_deep"] += 1
            return marker("too_deep"), 1
        changed: dict[Any, tuple[Any, Any]] | None = None
        renamed = False
        total = 0
        key_cache = self._key_cache
        clean = self._clean
        for key, item in value.items():
            kind = key_cache.get(key)
            if kind is None:
                kind = self._key_kind(key)
            if kind == "":  # the common case: inline fast paths for the value
                t = type(item)
                if t is str:
                    if len(item) < _MIN_SECRET_LEN or item in clean:
                        continue
                    new_item, n = self._string(item)
                elif t is dict or t is list or t is tuple or isinstance(item, (dict, list, tuple)):
                    new_item, n = self._value(item, depth + 1)
                else:
                    continue
                if n:
                    total += n
                    if changed is None:
                        changed = {}
                    changed[key] = (key, new_item)
                continue
            if kind is not None:  # a sensitive key: its whole value goes
                if item is None or type(item) is bool:
                    continue
                self.by_kind[kind] += 1
                total += 1
                if changed is None:
                    changed = {}
                changed[key] = (key, marker(kind))
                continue
            # The key itself holds a secret (and its value may be sensitive as well).
            new_key, n_key = self._string(key)
            value_kind = self._sensitive_kind(key)
            if value_kind and item is not None and type(item) is not bool:
                self.by_kind[value_kind] += 1
                new_item, n_item = marker(value_kind), 1
            else:
                new_item, n_item = self._value(item, depth + 1)
            total += n_key + n_item
            renamed = True
            if changed is None:
                changed = {}
            changed[key] = (new_key, new_item)
        if changed is None:
            return value, 0
        if not renamed:
            out = dict(value)
            for key, (_, new_item) in changed.items():
                out[key] = new_item
            return out, total
        # A key held a secret: rebuild in order; a marker key that collides gets a "~".
        out = {}
        for key, item in value.items():
            if key in changed:
                new_key, item = changed[key]
                if new_key != key:
                    while new_key in out or new_key in value:
                        new_key += "~"
                key = new_key
            out[key] = item
        return out, total


_MARKERS = {name: marker(name) for name, _ in _PATTERNS}


def make_scrubber(
    scrub: bool | Scrubber = True,
    *,
    extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None,
    extra_keys: Iterable[str] | None = None,
) -> Scrubber | None:
    """The scrubber a client uses: None when ``scrub`` is False, else a :class:`Scrubber`.

    ``scrub`` may also be a ready :class:`Scrubber`, used as it is. Does not block.

    :raises HiveLoopConfigError: for an invalid pattern, key, or a ``scrub`` that is neither
        a bool nor a Scrubber.
    """
    if isinstance(scrub, Scrubber):
        return scrub
    if type(scrub) is not bool:
        raise HiveLoopConfigError("scrub must be True, False or a Scrubber")
    if not scrub:
        return None
    return Scrubber(extra_patterns=extra_patterns, extra_keys=extra_keys)

"""One canonical form for request paths: the form that is both matched and forwarded upstream.

If the gateway matched one spelling of a path and forwarded another, a visitor could dress a
premium URL up so that the rules see something public while the upstream server resolves it to
the premium page (``/free/%2e%2e/premium``, ``/free/..;/premium``, ``/premium%2Fx``). So the path
is normalised exactly once, the result is matched *and* forwarded, and anything whose meaning
differs between servers is refused with :class:`~gateway.errors.BadRequest` instead of guessed.

The canonical form is percent-encoded ASCII:

* escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded, every other escape is
  kept with upper-case hex (RFC 3986 section 6.2.2);
* raw non-ASCII characters become their UTF-8 bytes, percent-encoded;
* raw ASCII characters that a path may not contain (space, ``"``, ``<``, ``>``, ``` ` ```, ``{``,
  ``}``, ``|``, ``^``, ``[``, ``]``, ``?``, ``#``) are percent-encoded rather than refused, as
  browsers and curl do themselves;
* duplicate slashes collapse, then dot segments are removed (the order nginx uses with
  ``merge_slashes on``); a trailing slash is kept.

Refused: a path not starting with ``/``; by default, any ``;`` (a path parameter: Tomcat,
Jetty and Spring serve ``/premium;x/a`` as ``/premium/a``, so a rule table that reads the ``;``
literally would match a different resource than the upstream serves); malformed escapes;
encoded slash or backslash, a raw backslash, NUL and every other ASCII control character (raw or
encoded); bytes that are not valid UTF-8 once every escape is decoded (this includes overlong
forms such as ``%C0%AF`` and the lone surrogates that ``surrogateescape`` decoding leaves
behind); ``..`` above the root; and, even with path parameters allowed, a ``.`` or ``..``
segment carrying ``;`` parameters (Tomcat and Jetty read ``..;`` as ``..``).

``path_parameters=True`` is for upstreams known not to interpret ``;`` (``[server]
allow_path_parameters``): then ``;`` is an ordinary character, matched and forwarded literally,
so ``/premium;x/a`` is a resource of its own that the rules see exactly as the upstream does.
An encoded ``%3B`` is always data, never a delimiter, and stays encoded.

There is no Unicode normalisation: ``é`` precomposed and decomposed stay different paths.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from gateway.errors import BadRequest

__all__ = ["normalise_path", "normalise_pattern"]

# RFC 3986 pchar without "%": unreserved, sub-delims, ":" and "@".
_PCHAR = "A-Za-z0-9\\-._~!$&'()*+,;=:@"
_PCHAR_NO_DOT = "A-Za-z0-9\\-_~!$&'()*+,;=:@"

# The fast path: pchars only, no "%", every segment non-empty and not starting with "." (so no
# "//" and no dot segment), an optional trailing slash. Deterministic, so linear in the length.
_ORDINARY = re.compile(
    rf"/(?:[{_PCHAR_NO_DOT}][{_PCHAR}]*(?:/[{_PCHAR_NO_DOT}][{_PCHAR}]*)*/?)?"
).fullmatch

# Slow path tokens: a run of characters kept as they are, one well-formed escape, or any other
# single character (including a "%" that does not start a well-formed escape).
_TOKENS = re.compile(rf"[{_PCHAR}/]+|%[0-9A-Fa-f]{{2}}|.", re.DOTALL).findall

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What a run token from _TOKENS starts with: a pchar or "/".
_KEPT_AS_IS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/"
)


def _byte_name(byte: int) -> str | None:
    """Why a decoded byte makes a path ambiguous, or ``None`` if it does not."""
    if byte == 0x2F:
        return "an encoded slash"
    if byte == 0x5C:
        return "a backslash"
    if byte == 0x00:
        return "a NUL character"
    if byte < 0x20 or byte == 0x7F:
        return "a control character"
    return None


def _escape_table() -> tuple[str | None, ...]:
    """For every byte value, its canonical spelling in a path, or ``None`` if it is refused."""
    table: list[str | None] = []
    for byte in range(256):
        if _byte_name(byte) is not None:
            table.append(None)
        elif byte in _UNRESERVED:
            table.append(chr(byte))
        else:
            table.append(f"%{byte:02X}")
    return tuple(table)


_CANONICAL_BYTE = _escape_table()

_MAX_SHOWN = 60


def _shown(raw: str) -> str:
    """The path as it may appear in an error message: repr-escaped and truncated."""
    if len(raw) > _MAX_SHOWN:
        return repr(raw[:_MAX_SHOWN]) + f"... ({len(raw)} characters)"
    return repr(raw)


def _reject(raw: str, problem: str) -> BadRequest:
    return BadRequest(f"bad request path {_shown(raw)}: {problem}")


def normalise_path(raw: str, *, path_parameters: bool = False) -> str:
    """Return the canonical, percent-encoded ASCII form of the request path ``raw``.

    ``raw`` is the path as received, without the query string. Raises
    :class:`~gateway.errors.BadRequest` when the path is malformed or ambiguous, which includes
    any ``;`` unless ``path_parameters`` (see the module docstring). The function is idempotent,
    and ordinary paths come back unchanged (as the same object) without further work.
    """
    if not path_parameters and ";" in raw:
        raise _reject(raw, "';' path parameters are ambiguous")
    if _ORDINARY(raw):
        return raw
    return _normalise(raw, glob=False)


def normalise_pattern(pattern: str) -> str:
    """Normalise a route pattern the way :func:`normalise_path` normalises requests.

    The differences: ``?`` is a glob character here and stays as it is (``*`` is a legal path
    character anyway), and ``;`` is allowed (it can only match with ``path_parameters``).
    Raises :class:`~gateway.errors.BadRequest` like ``normalise_path``.
    """
    return _normalise(pattern, glob=True)


def _normalise(raw: str, *, glob: bool) -> str:
    if not raw.startswith("/"):
        raise _reject(raw, "it must start with '/'")
    parts: list[str] = []
    high_bytes = False
    for token in _TOKENS(raw):
        first = token[0]
        if first in _KEPT_AS_IS:
            parts.append(token)
        elif first == "%":
            if len(token) == 1:
                raise _reject(raw, "malformed percent-escape")
            byte = int(token[1:], 16)
            canonical = _CANONICAL_BYTE[byte]
            if canonical is None:
                raise _reject(raw, f"{_byte_name(byte)} is ambiguous")
            high_bytes = high_bytes or byte >= 0x80
            parts.append(canonical)
        elif first == "?" and glob:
            parts.append(first)
        elif first.isascii():
            # Not a pchar: a control character, a backslash or a character that needs encoding.
            canonical = _CANONICAL_BYTE[ord(first)]
            if canonical is None:
                raise _reject(raw, f"{_byte_name(ord(first))} is ambiguous")
            parts.append(canonical)
        else:
            try:
                encoded = first.encode("utf-8")
            except UnicodeEncodeError:
                raise _reject(raw, "not valid UTF-8") from None
            high_bytes = True
            parts.append("".join(f"%{byte:02X}" for byte in encoded))
    joined = "".join(parts)
    if high_bytes:
        # Checked on the whole path before dot segments drop anything: every byte must be valid.
        try:
            unquote_to_bytes(joined).decode("utf-8")
        except UnicodeDecodeError:
            raise _reject(raw, "not valid UTF-8 once percent-decoded") from None
    return _remove_dot_segments(joined, raw)


def _remove_dot_segments(path: str, raw: str) -> str:
    """Collapse duplicate slashes, then resolve ``.`` and ``..`` (RFC 3986 section 5.2.4)."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    trailing_slash = False
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        bare = segment.partition(";")[0]
        if bare == "..":
            if segment != bare:
                raise _reject(raw, "'..;' is ambiguous")
            if not kept:
                raise _reject(raw, "'..' climbs above the root")
            kept.pop()
        elif bare == ".":
            if segment != bare:
                raise _reject(raw, "'.;' is ambiguous")
        elif segment:
            kept.append(segment)
            continue
        # An empty, "." or ".." segment at the end leaves the path ending in a slash.
        trailing_slash = index == last
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing_slash else "")

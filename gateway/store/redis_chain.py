"""A session's validation and the customer's access answer from Redis in one round trip.

A request whose session L1 does not hold needs two entries from the shared tier, and the
second one's key is built from the first one's value: the session's entry (found by its token's
hash) names the customer, and the access answer is ``<customer id>:<rule>``, scoped to the
customer. Asked one after the other that is two round trips, each behind the previous one.
:class:`ChainReader` asks Redis to follow the chain itself: a Lua script (loaded once, then run
by its SHA; loaded again when Redis answers NOSCRIPT, after a ``SCRIPT FLUSH`` or a failover)
reads, per lookup (:class:`ChainLookup`):

1. the session scope's generation record, then the session's entry under it;
2. if the entry names a customer (its fourth element, a string) and has an owner
   (``[owner, generation]``): the owner's generation record;
3. unless that record no longer holds the entry's owner generation: the customer's generation
   record in the access cache, then the access entry under it.

It answers the raw bytes (:class:`ChainAnswer`): the entries, the owner record it read and the
customer id it built the access key from. The Lua side decodes the session entry only to find
its way (``cjson``: numbers become doubles, which is why it never decides anything on them
alone); the caller (:meth:`RedisCache.get_chained
<gateway.store.redis_cache.RedisCache.get_chained>`) decodes both entries with the usual
codecs and checks everything again exactly, as :meth:`RedisCache.get
<gateway.store.redis_cache.RedisCache.get>` does. Generation records read inside Redis are
Redis's current ones, at least as current as any copy a process keeps
(:mod:`~gateway.store.redis_generations`); the epoch is the process's, as for every other
lookup, so reads and writes of one process agree on it.

The chained lookups of one event-loop tick go out as one EVALSHA, as
:class:`~gateway.store.redis_batch.GetBatcher` does for GETs; a lookup may be awaited or handed
to a callback (:meth:`ChainReader.submit`: the access service's lane for an L2-only hit, which
makes no task per request), and both kinds share the batch. The script only reads (so
Redis runs it on a full server too), without declaring flags (a ``#!lua flags=no-writes``
line would refuse it on servers before 7.0), and touches keys it learns on the way, which one
Redis server allows and a Cluster does not (the keys of one lookup live in different slots): on
a Cluster :func:`chain_reader` gives None and the caches keep their two reads. A key that
holds something else than a string reads as absent; an error of the script reaches every
lookup of the batch as the error of its own read.

A batch is sent on a connection the reader keeps (taken from the client's pool, so with its
TLS, credentials, database and Sentinel master), by the connection's own send and read rather
than the client's command, which costs redis-py about twice the CPU per batch
(:meth:`ChainReader._evalsha`); on an open connection of redis-py's own class, straight on
its stream and parser, under the batch's time limit (:func:`_direct`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)


# ARGV: seven per lookup, ChainLookup's fields in order, each its own bulk string (encode_lookup
# writes them as RESP; no command packing of redis-py's is involved, so many arguments cost the
# process nothing more than one, and the script reads them without parsing: measured inside
# Redis, six lookups per call, 9-10 us per lookup with one length-prefixed argument each, 7-8 us
# this way). Every answer is five values, false (nil for the caller) where nothing was read or
# found. (Local references to redis.pcall and cjson.decode: looked up once per call, not per
# read.)
SCRIPT = """
local pcall_, call, decode = pcall, redis.pcall, cjson.decode
local function get(key)
  local value = call('GET', key)
  if type(value) == 'string' then return value end
  return false
end
local answers, n = {}, 0
for i = 1, #ARGV - 6, 7 do
  local prefix, records, scope, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local then_prefix, then_records, suffix = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local entry = get(prefix .. key .. '@' .. (get(records .. scope) or '0'))
  local answer = {entry, false, false, false, false}
  if entry then
    local decoded, data = pcall_(decode, entry)
    if decoded and type(data) == 'table' and type(data[4]) == 'string' then
      local owned = true
      local owner = data[5]
      if owner ~= nil then
        owned = false
        if type(owner) == 'table' and type(owner[1]) == 'string' then
          local record = get(records .. owner[1])
          answer[2], answer[3] = owner[1], record
          owned = tonumber(record or '0') == owner[2]
        end
      end
      if owned then
        local customer = data[4]
        local generation = get(then_records .. customer) or '0'
        answer[4] = customer
        answer[5] = get(then_prefix .. customer .. suffix .. '@' .. generation)
      end
    end
  end
  n = n + 1
  answers[n] = answer
end
return answers
"""


class ChainLookup(NamedTuple):
    """One chained lookup, as key prefixes (the key shapes are the caches', not this module's).

    The first entry is ``<prefix><key>@<generation of scope>``, the generation from the record
    ``<records><scope>``; the second ``<then_prefix><customer><suffix>@<generation>``, the
    generation from ``<then_records><customer>``. (A named tuple: the script's seven fields,
    in order; :func:`encode_lookup`.)"""

    prefix: str
    records: str
    scope: str
    key: str
    then_prefix: str
    then_records: str
    suffix: str


FIELDS = len(ChainLookup._fields)
"""The script's arguments per lookup."""


def encode_lookup(lookup: ChainLookup) -> bytes:
    """The script's arguments for ``lookup``, as RESP: its seven fields, each a bulk string."""
    prefix, records, scope, key, then_prefix, then_records, suffix = lookup
    scope_ = _field(scope)
    return b"".join(
        (
            _fixed(prefix),
            _fixed(records),
            scope_,
            scope_ if key == scope else _field(key),  # (a session's key is its own scope)
            _fixed(then_prefix),
            _fixed(then_records),
            _fixed(suffix),
        )
    )


def _field(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


# The fields every lookup of a cache shares (its key prefixes, the rule's suffix), encoded once:
# a handful per process (a new epoch adds its prefixes), bounded all the same.
_FIXED: dict[str, bytes] = {}
_MAX_FIXED = 256


def _fixed(value: str) -> bytes:
    encoded = _FIXED.get(value)
    if encoded is None:
        encoded = _field(value)
        if len(_FIXED) < _MAX_FIXED:
            _FIXED[value] = encoded
    return encoded


class ChainAnswer(NamedTuple):
    """What Redis holds for one :class:`ChainLookup`, raw.

    ``owner`` and ``owner_record``: the owner the script read from the entry and that owner's
    generation record (None: no owner found, or no record). ``customer``: the customer id the
    second entry was looked up for; None when it was not looked up (no entry, a rejected
    session, an owner whose generation moved), and then ``then_entry`` is None too."""

    entry: bytes | None
    owner: bytes | None = None
    owner_record: bytes | None = None
    customer: bytes | None = None
    then_entry: bytes | None = None


Done = Callable[["ChainAnswer | Exception"], None]
"""What a :meth:`ChainReader.submit` caller is handed: its lookup's answer, or the error of the
batch's read (a :class:`TimeoutError` when the read gave up)."""


class ChainReader:
    """Runs :class:`ChainLookup` s, the lookups of one event-loop tick as one EVALSHA.

    A lookup is either awaited (:meth:`read`) or handed to a callback (:meth:`submit`): both
    join the same batch. The first lookup of a tick schedules the batch for the next pass of
    the loop, and the batch's read runs as one task, bounded by ``timeout`` seconds (None: no
    bound of its own; each :meth:`read` is bounded by its caller's guard anyway)."""

    def __init__(self, client: redis.Redis, *, timeout: float | None = None) -> None:
        self._pool = client.connection_pool
        self._sha = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest().encode()
        self._idle: list[AbstractConnection] = []  # connections kept between batches
        self._returning: set[asyncio.Future[None]] = set()
        self._timeout = timeout
        self._open: list[tuple[ChainLookup, Done]] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # script calls made (for tests and benchmarks)

    async def read(self, lookup: ChainLookup) -> ChainAnswer:
        waiter: asyncio.Future[ChainAnswer] = asyncio.get_running_loop().create_future()

        def done(answer: ChainAnswer | Exception) -> None:
            if waiter.done():  # its reader gave up (its guard's timeout)
                return
            if isinstance(answer, Exception):
                waiter.set_exception(answer)
            else:
                waiter.set_result(answer)

        self.submit(lookup, done)
        return await waiter

    def submit(self, lookup: ChainLookup, done: Done) -> None:
        """Read ``lookup`` with this tick's batch; ``done`` gets its answer (or the batch's
        error) on the event loop, never before this call returns."""
        batch = self._open
        if batch is None:
            batch = self._open = []
            asyncio.get_running_loop().call_soon(self._flush)
        batch.append((lookup, done))

    def _flush(self) -> None:
        batch, self._open = self._open, None
        if not batch:
            return
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[tuple[ChainLookup, Done]]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                answers = await self._read([lookup for lookup, _ in batch])
        except Exception as exc:
            _deliver([(done, exc) for _, done in batch])
            return
        except asyncio.CancelledError:  # the loop is closing: nobody gets an answer now
            failure = TimeoutError("the batched read was cancelled")
            _deliver([(done, failure) for _, done in batch])
            raise
        _deliver([(done, answer) for (_, done), answer in zip(batch, answers, strict=True)])

    async def _read(self, lookups: list[ChainLookup]) -> list[ChainAnswer]:
        replies = await self._evalsha([encode_lookup(lookup) for lookup in lookups])
        if not isinstance(replies, list) or len(replies) != len(lookups):
            raise redis.ResponseError(
                f"an answer of {type(replies).__name__} to {len(lookups)} lookups"
            )
        # Anything but bytes (nil, an unexpected type) reads as nothing.
        return [
            ChainAnswer(*[value if isinstance(value, bytes) else None for value in reply])
            for reply in replies
        ]

    async def _evalsha(self, lookups: list[bytes]) -> Any:
        """The script's reply to ``lookups`` (encoded), asked on a connection of the reader's own.

        Not through the client's command (``client.evalsha``): per batch that costs redis-py
        about twice the CPU of the connection's own send and read (measured with uvloop, ten
        lookups: 198 against 104-119 us), for what the reader does not need there (its
        observability hooks, the retry wrapper, taking a connection from the pool and giving it
        back under the pool's lock). The connection is the pool's (``get_connection``: the
        client's TLS, credentials, database, Sentinel master), kept by the reader between
        batches, one per batch in flight. A connection that fails is closed by redis-py itself
        and connects again when next used; one that Redis closed while the reader kept it (a
        restart, an idle timeout) is tried once more, as the client's retry would."""
        kept = self._idle
        reused = bool(kept)
        pool: Any = self._pool  # (get_connection is untyped)
        connection: AbstractConnection = kept.pop() if reused else await pool.get_connection()
        try:
            try:
                return await self._ask(connection, lookups)
            except redis.ConnectionError:
                if not reused:
                    raise
                return await self._ask(connection, lookups)  # it connects again
        finally:
            self._keep(connection)  # (closed by redis-py unless Redis answered an error)

    async def _ask(self, connection: AbstractConnection, lookups: list[bytes]) -> Any:
        command = evalsha_command(self._sha, lookups)
        try:
            return await _direct(connection, command, bounded=self._timeout is not None)
        except NoScriptError:
            # Redis does not know the script (a restart, a failover, SCRIPT FLUSH): load it,
            # as redis-py's registered scripts do, and ask again.
            await connection.send_packed_command(connection.pack_command("SCRIPT", "LOAD", SCRIPT))
            await connection.read_response()
            await connection.send_packed_command(command)
            return await connection.read_response()

    def _keep(self, connection: AbstractConnection) -> None:
        """Keep ``connection`` for the next batch (the reader's own, out of the pool until the
        client closes); beyond :data:`KEPT` (batches that overlapped), give it back."""
        if len(self._idle) < KEPT:
            self._idle.append(connection)
        else:
            returning = asyncio.ensure_future(self._pool.release(connection))
            self._returning.add(returning)
            returning.add_done_callback(self._returning.discard)


KEPT = 4
"""How many connections a :class:`ChainReader` keeps between batches (one per batch in
flight; more overlap only while Redis is slow)."""


_SEND = AbstractConnection.send_packed_command
_READ = AbstractConnection.read_response


async def _direct(connection: AbstractConnection, command: bytes, *, bounded: bool) -> Any:
    """``command``'s reply on ``connection``, read straight from the connection's stream and
    parser when it is open: what its ``send_packed_command`` and ``read_response`` do, without
    their time limits (a task per send for ``asyncio.wait_for``, a timeout per read) and
    health-check bookkeeping, when the batch has a time limit of its own (``bounded``:
    :meth:`ChainReader._answer`'s; the gateway's reader has its guard's). Measured in one
    process against a local Redis, one EVALSHA after the other: 37 against 55 us of the
    client's CPU per call. Their failures are kept: a read that fails or is abandoned closes
    the connection (what was sent may still be answered: the stream is out of step), an OS
    error is a ``ConnectionError``, an error reply is raised. Through the public calls go: a
    connection that is not open (never connected, or closed after a failure: it connects
    again), one whose class has its own send or read (Sentinel's, which turns a demoted
    master's refusal into a ``ConnectionError``; an instrumented one), and any of a redis-py
    whose connection lacks the stream or parser."""
    kind = type(connection)
    writer: Any = getattr(connection, "_writer", None)
    parser: Any = getattr(connection, "_parser", None)
    if (
        not bounded
        or kind.send_packed_command is not _SEND
        or kind.read_response is not _READ
        or writer is None
        or writer.transport.is_closing()
        or getattr(connection, "_reader", None) is None
        or not callable(getattr(parser, "read_response", None))
    ):
        await connection.send_packed_command(command)
        return await connection.read_response()
    try:
        writer.write(command)
        await writer.drain()
        reply = await parser.read_response()
    except BaseException as exc:
        await connection.disconnect(nowait=True)
        if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
            raise redis.ConnectionError(f"Error talking to Redis: {exc!r}") from exc
        raise
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def evalsha_command(sha: bytes, lookups: list[bytes]) -> bytes:
    """``EVALSHA <sha> 0 <arguments...>`` as Redis reads it (RESP), the arguments those of
    ``lookups`` (:func:`encode_lookup`): one bytes object to send."""
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%b\r\n$1\r\n0\r\n" % (
        FIELDS * len(lookups) + 3,
        len(sha),
        sha,
    )
    return head + b"".join(lookups)


def _deliver(answers: list[tuple[Done, ChainAnswer | Exception]]) -> None:
    """Hand each lookup of a batch its answer; one that fails (a bug) does not cost the others
    theirs."""
    for done, answer in answers:
        try:
            done(answer)
        except Exception:
            log.exception("handing a chained read its answer failed")


def chain_reader(client: redis.Redis, *, timeout: float | None = None) -> ChainReader | None:
    """The process's :class:`ChainReader` (its batches bounded by ``timeout``); None on a Redis
    Cluster, where a lookup's keys live in different slots (the caches then read the two
    entries one after the other)."""
    if isinstance(client, RedisCluster):
        return None
    return ChainReader(client, timeout=timeout)

"""etcd backend (etcd v3 API through etcd3aio): the store shared by several nodes.

* **Revisions.** etcd starts at revision 1 with no keys; the store starts at 0. Every revision
  this backend hands out is etcd's minus one, so the same history reads the same on every
  backend and on every node (all clients of one cluster share etcd's global revision).
* **Transactions.** One etcd txn per commit: ``expect`` becomes a ``mod_revision`` compare,
  ``delete`` of a key that must exist a ``version > 0`` compare. When a compare fails, the
  failure branch reads every compared key, so the error names the first failed precondition
  exactly as :func:`cilia.store.backend.plan_writes` does. etcd applies a txn with no change
  without a new revision, as the other backends do.
* **History.** etcd has no "events since r" call. One background watch per backend follows the
  whole key space from the revision the backend was opened at and keeps the last ``history``
  events or more; :meth:`EtcdBackend.events` waits until that watch has delivered the newest
  revision this backend has seen (from a read, a commit or the watch) and answers from the
  buffer. Older history (or a follower that broke) opens a
  watch from ``r`` and reads until it has seen the events of the current revision (every
  revision after 1 has at least one); that costs ~100 ms, since etcd catches up watches of past
  revisions every 100 ms. A compacted start raises :class:`CompactedError`. ``compact(r)``
  compacts etcd at ``r + 2`` (etcd keeps its compaction revision watchable), at most at the
  current revision, so compacting at the current revision keeps that revision's events; the
  buffer forgets the same. Compaction by another client does not shorten this buffer.
* **Waiting.** The same watch wakes :meth:`wait`. It is our own stream (not etcd3aio's
  reconnecting watch, which resumes after the response header's revision and so can skip events
  of a watch still catching up): after a break it reopens after the last event received.
* **Failures.** Every call has a deadline (``timeout``, about 1 s: a proposal in flight when the
  leader dies is lost and only the deadline ends it, etcd-notes.md). Reads are retried until
  ``retry_for`` seconds have passed; a commit is not retried, because a timed-out txn may have
  been applied: it raises :class:`EtcdUnavailableError`, and the caller decides (re-read, then
  retry; the identity allocator does exactly that). Only a commit gRPC failed before sending
  (no endpoint connected) is retried like a read.
* **Leases.** :meth:`EtcdBackend.grant_lease` returns a :class:`Lease` kept alive in the
  background; ``commit(ops, leases={key: lease_id})`` attaches puts to it.

asyncio runs on one private event loop thread; the synchronous API submits coroutines to it.
Ranges are read in pages of 1000 keys at one revision (gRPC refuses messages over 4 MiB).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from etcd3aio import EtcdError, prefix_range_end
from etcd3aio._protobuf import (  # etcd3aio builds compares on value/version/create only
    Compare,
    WatchCreateRequest,
    WatchRequest,
    WatchStub,
)
from etcd3aio.client import Etcd3Client
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import KVService

from cilia.store.backend import RawEvent, RawOp, RawRecord
from cilia.store.errors import CompactedError, ConflictError, NotFoundError, StoreError
from cilia.store.records import EventType
from cilia.store.store import Store

_log = logging.getLogger(__name__)
T = TypeVar("T")

OFFSET = 1  # etcd revision of an empty cluster
_ALL_START = b"\x00"
_ALL_END = b"\x00"  # with key b"\0": every key (etcd's "from key" range)
_PAGE = 1000
TLS_SERVER_NAME = "cilia-etcd"  # in the lab etcd's server certificate (cilia.lab.etcd_pki.SERVER_NAME)


class EtcdUnavailableError(StoreError):
    """etcd did not answer in time (no quorum, every endpoint down, or a leader election)."""

    def __init__(self, what: str, endpoints: Sequence[str], cause: BaseException | None = None,
                 maybe_applied: bool = False) -> None:
        detail = f": {type(cause).__name__}: {cause}" if cause is not None and str(cause) else ""
        tail = " (the transaction may or may not have been applied: re-read before retrying)" \
            if maybe_applied else ""
        super().__init__(f"etcd {', '.join(endpoints)}: {what} failed{detail}{tail}")
        self.endpoints = list(endpoints)
        self.maybe_applied = maybe_applied


class LeaseNotFoundError(StoreError):
    """A put named a lease etcd no longer has (it expired or was revoked)."""


def _b(s: str) -> bytes:
    return s.encode()


def _store_rev(etcd_rev: int) -> int:
    return max(etcd_rev - OFFSET, 0)


def _etcd_rev(store_rev: int) -> int:
    return store_rev + OFFSET


def _raw(kv: Any) -> RawRecord:
    return RawRecord(kv.key.decode(), kv.value.decode(), _store_rev(kv.create_revision),
                     _store_rev(kv.mod_revision), kv.version)


def _event(ev: Any) -> RawEvent:
    rev = _store_rev(ev.kv.mod_revision)
    if ev.type == 0:
        return RawEvent(rev, EventType.PUT, ev.kv.key.decode(), ev.kv.value.decode())
    # A DELETE carries the value before the delete (the watch asks for prev_kv).
    before = ev.prev_kv.value.decode() if ev.prev_kv.key else "{}"
    return RawEvent(rev, EventType.DELETE, ev.kv.key.decode(), before)


class Lease:
    """An etcd lease kept alive by the backend's loop until :meth:`revoke` or :meth:`abandon`."""

    def __init__(self, backend: EtcdBackend, lease_id: int, ttl: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._backend = backend
        self._task: asyncio.Task[None] | None = None
        self.alive = True

    def revoke(self) -> None:
        """Stop the keepalive and delete every key attached to the lease now."""
        self.abandon()
        with contextlib.suppress(StoreError):
            self._backend._call("lease revoke",
                                lambda c: c.lease.revoke(self.id, timeout=self._backend.timeout))

    def abandon(self) -> None:
        """Stop the keepalive only: the keys go when the TTL runs out (what a crashed node does)."""
        self.alive = False
        task, self._task = self._task, None
        if task is not None:
            self._backend._loop.call_soon_threadsafe(task.cancel)


class EtcdBackend:
    """A :class:`cilia.store.backend.Backend` on an etcd cluster (see the module docstring)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 1.0, retry_for: float = 15.0,
                 connect_timeout: float = 10.0, history: int = 20_000,
                 tls: Sequence[str] | None = None) -> None:
        if not endpoints:
            raise StoreError("the etcd backend needs at least one endpoint (host:port)")
        self.endpoints = list(endpoints)
        # tls: (CA, client certificate, client key) files: mutual TLS, the server checked against
        # the CA under TLS_SERVER_NAME (one name for every member: the channel balances over them)
        self.tls = tuple(tls) if tls else None
        self._tls_args: dict[str, Any] = {}
        if self.tls is not None:
            try:
                ca, cert, key = (Path(f).read_bytes() for f in self.tls)
            except (OSError, ValueError) as e:
                raise StoreError(f"etcd TLS files {', '.join(self.tls)}: {e}") from e
            self._tls_args = {"ca_cert": ca, "cert_chain": cert, "cert_key": key,
                              "tls_server_name": TLS_SERVER_NAME}
        self.timeout = timeout
        self.retry_for = retry_for
        self.history = history
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cilia-etcd", daemon=True)
        self._thread.start()
        self._client = Etcd3Client(self.endpoints, rpc_max_attempts=2, **self._tls_args)
        self._watch_channel: Any = None
        self._watch_stub: Any = None
        self._cond = threading.Condition()
        self._closed = False
        try:
            self._submit(self._client.connect()).result(connect_timeout)
            self._submit(self._open_watch_channel()).result(connect_timeout)
            start = self._etcd_revision(deadline=time.monotonic() + connect_timeout)
        except BaseException:  # cleanup and re-raise: no event-loop thread left behind a failed open
            self._shutdown_loop()
            raise
        self._seen = start
        # Events the follower received, in order: every event with revision >= _buf_from (store
        # revisions) through _hub_rev is here. Served by events() without a watch of history.
        self._buf: list[RawEvent] = []
        self._buf_from = _store_rev(start) + 1
        self._hub_rev = _store_rev(start)
        self._follower = self._submit(self._follow(start + 1))

    # ------------------------------------------------------------------ plumbing

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, what: str, fn: Callable[[Etcd3Client], Awaitable[T]], *, retry: bool = True,
              deadline: float | None = None) -> T:
        """Run ``fn(client)`` on the loop with the per-call timeout; retry reads until the deadline."""
        if self._closed:
            raise StoreError("etcd store is closed")
        end = deadline if deadline is not None else time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                return self._submit(_with_timeout(fn(self._client), self.timeout)).result(self.timeout + 5)
            except (EtcdError, TimeoutError, grpc.RpcError) as e:
                if isinstance(e, grpc.RpcError) and _code(e) not in _TRANSIENT:
                    detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
                    if "lease not found" in str(detail):
                        raise LeaseNotFoundError(f"etcd {what}: {detail} (expired or revoked)") from e
                    raise StoreError(f"etcd {what}: {detail}") from e
                if not retry and not _never_sent(e):
                    raise EtcdUnavailableError(what, self.endpoints, e, maybe_applied=True) from e
                if time.monotonic() + delay >= end:
                    raise EtcdUnavailableError(what, self.endpoints, e) from e
                _log.debug("etcd %s: %s; retrying", what, e)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _etcd_revision(self, deadline: float | None = None) -> int:
        resp = self._call("revision", lambda c: c.kv.get(_ALL_START, count_only=True, limit=1,
                                                        timeout=self.timeout), deadline=deadline)
        return int(resp.header.revision)

    async def _watch_stream(self, start: int, prev_kv: bool = False) -> AsyncIterator[Any]:
        """Responses of one watch stream over every key from etcd revision ``start``.

        No reconnect here: etcd3aio's watch resumes after the *header* revision, which for a
        watcher still catching up on history is past events it has not sent yet; callers resume
        after the last event they received instead.
        """
        create = WatchCreateRequest(key=_ALL_START, range_end=_ALL_END, start_revision=start, prev_kv=prev_kv)

        async def requests() -> AsyncIterator[Any]:
            yield WatchRequest(create_request=create)
            await asyncio.Future()  # keep the stream open

        call = self._watch_stub.Watch(requests())
        try:
            async for resp in call:
                yield resp
        finally:
            call.cancel()

    async def _follow(self, start: int) -> None:
        """Follow every key from ``start`` (etcd revision): buffer the events for :meth:`events`
        and wake :meth:`wait`. A live watch gets events at once; a watch of past revisions is
        caught up by etcd only every 100 ms, which is why history is served from here."""
        nxt = start
        while True:
            behind = False
            try:
                async with contextlib.aclosing(self._watch_stream(nxt, prev_kv=True)) as stream:
                    async for resp in stream:
                        if resp.compact_revision or resp.canceled:
                            behind = True
                            break
                        if resp.events:
                            nxt = resp.events[-1].kv.mod_revision + 1
                            self._buffer([_event(ev) for ev in resp.events])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the follower must outlive any error; readers fall back to history
                _log.debug("etcd watch follower: %s; restarting", e)
            await asyncio.sleep(0.2)
            if behind:  # fell behind a compaction: the buffer has a gap, start it again from now
                with contextlib.suppress(Exception):  # unreachable etcd: the next round retries
                    now = await self._client.kv.get(_ALL_START, count_only=True, limit=1,
                                                    timeout=self.timeout)
                    nxt = int(now.header.revision) + 1
                    with self._cond:
                        self._buf.clear()
                        self._hub_rev = _store_rev(nxt - 1)
                        self._buf_from = self._hub_rev + 1
                        self._cond.notify_all()

    def _buffer(self, events: list[RawEvent]) -> None:
        with self._cond:
            self._buf.extend(events)
            self._hub_rev = events[-1].revision
            if len(self._buf) > 2 * self.history:
                cut = len(self._buf) - self.history
                # Keep whole revisions only.
                while cut < len(self._buf) and self._buf[cut].revision == self._buf[cut - 1].revision:
                    cut += 1
                del self._buf[:cut]
                self._buf_from = self._buf[0].revision if self._buf else self._hub_rev + 1
            if _etcd_rev(self._hub_rev) > self._seen:
                self._seen = _etcd_rev(self._hub_rev)
            self._cond.notify_all()

    async def _open_watch_channel(self) -> None:
        # Its own channel, created on the loop: watch streams do not queue behind unary calls.
        self._watch_channel = ConnectionManager(self.endpoints).get_channel(**self._tls_args)
        self._watch_stub = WatchStub(self._watch_channel)

    def _note(self, etcd_rev: int) -> None:
        with self._cond:
            if etcd_rev > self._seen:
                self._seen = etcd_rev
                self._cond.notify_all()

    # ------------------------------------------------------------------ Backend protocol

    def revision(self) -> int:
        rev = self._etcd_revision()
        self._note(rev)
        return _store_rev(rev)

    def get(self, key: str) -> RawRecord | None:
        resp = self._call("get", lambda c: c.kv.get(_b(key), timeout=self.timeout))
        return _raw(resp.kvs[0]) if resp.kvs else None

    def range(self, prefix: str) -> tuple[int, list[RawRecord]]:
        start, end = _b(prefix), prefix_range_end(_b(prefix))
        out: list[RawRecord] = []
        at = 0  # later pages are read at the first page's revision
        while True:
            resp = self._call("range", lambda c, first=start, rev=at: c.kv.get(
                first, range_end=end, revision=rev, limit=_PAGE, timeout=self.timeout))
            if not at:
                at = int(resp.header.revision)
            out.extend(_raw(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return _store_rev(at), out
            start = resp.kvs[-1].key + b"\x00"

    def commit(self, ops: Sequence[RawOp], leases: Mapping[str, int] | None = None) -> int:
        """Apply ``ops`` in one etcd txn; ``leases`` attaches puts of the named keys to leases."""
        compares: list[Any] = []
        success: list[Any] = []
        checked: list[str] = []
        for op in ops:
            key = _b(op.key)
            if op.op == "expect":
                compares.append(Compare(result=Compare.EQUAL, target=Compare.MOD, key=key,
                                        mod_revision=_etcd_rev(op.revision) if op.revision else 0))
                checked.append(op.key)
            elif op.op == "delete":
                if not op.flag:
                    compares.append(KVService.txn_compare_version(key, 0, result=Compare.GREATER))
                    checked.append(op.key)
                success.append(KVService.txn_op_delete(key))
            elif op.op == "put":
                lease = (leases or {}).get(op.key, 0)
                success.append(KVService.txn_op_put(key, _b(op.value), lease=lease))
            else:
                raise ValueError(f"unknown op {op.op!r}")
        failure = [KVService.txn_op_get(_b(k)) for k in dict.fromkeys(checked)]
        resp = self._call("commit", lambda c: c.kv.txn(compares, success, failure, timeout=self.timeout),
                          retry=False)
        if resp.succeeded:
            rev = int(resp.header.revision)
            self._note(rev)
            return _store_rev(rev)
        current = {}
        for r in resp.responses:
            for kv in r.response_range.kvs:
                current[kv.key.decode()] = _raw(kv)
        for op in ops:
            rec = current.get(op.key)
            if op.op == "expect":
                actual = rec.mod_revision if rec else 0
                if actual != op.revision:
                    raise ConflictError(op.key, op.revision, actual)
            elif op.op == "delete" and not op.flag and rec is None:
                raise NotFoundError(op.key)
        # Every compare held when re-read: the keys changed between evaluation and the read.
        raise ConflictError(checked[0], 0, 0) if checked else StoreError("etcd txn failed without compares")

    def commit_if_prefix_empty(self, prefix: str, ops: Sequence[RawOp]) -> int | None:
        """Like :meth:`commit`, and only if no key starts with ``prefix``; None if one does."""
        guard = KVService.txn_compare_version(_b(prefix), 0, range_end=prefix_range_end(_b(prefix)))
        compares = [guard]
        success: list[Any] = []
        for op in ops:
            if op.op == "expect":
                compares.append(Compare(result=Compare.EQUAL, target=Compare.MOD, key=_b(op.key),
                                        mod_revision=_etcd_rev(op.revision) if op.revision else 0))
            elif op.op == "delete":
                success.append(KVService.txn_op_delete(_b(op.key)))
            elif op.op == "put":
                success.append(KVService.txn_op_put(_b(op.key), _b(op.value)))
            else:
                raise ValueError(f"unknown op {op.op!r}")
        resp = self._call("commit", lambda c: c.kv.txn(compares, success, timeout=self.timeout), retry=False)
        return _store_rev(int(resp.header.revision)) if resp.succeeded else None

    def events(self, prefix: str, from_revision: int) -> list[RawEvent]:
        """Events under ``prefix`` from ``from_revision`` through at least the newest revision this
        backend has seen (so through the one a preceding :meth:`revision` returned)."""
        first = max(from_revision, 0)
        lo, hi = _b(prefix), prefix_range_end(_b(prefix))
        with self._cond:
            last = _store_rev(self._seen)
            if first > last:
                return []
            caught_up = first >= self._buf_from and self._cond.wait_for(
                lambda: self._hub_rev >= last or first < self._buf_from, self.timeout)
            # The follower may have restarted its buffer meanwhile (after a compaction): check again.
            if caught_up and first >= self._buf_from and self._hub_rev >= last:
                i = bisect.bisect_left(self._buf, first, key=lambda e: e.revision)
                return [e for e in self._buf[i:] if lo <= _b(e.key) < hi]
        start = _etcd_rev(first)
        deadline = time.monotonic() + self.retry_for
        current = self._etcd_revision(deadline)
        if current <= OFFSET or start > current:
            return []
        fut = self._submit(self._history(start, current))
        try:
            got = fut.result(max(deadline - time.monotonic(), 1))
        except TimeoutError as e:
            fut.cancel()
            raise EtcdUnavailableError(f"history from revision {from_revision}", self.endpoints, e) from e
        if isinstance(got, int):
            raise CompactedError(from_revision, max(_store_rev(got) - 1, 0))
        return [_event(ev) for ev in got if lo <= ev.kv.key < hi]

    async def _history(self, start: int, until: int) -> list[Any] | int:
        """Events from etcd revision ``start`` through ``until``; an int is etcd's compaction revision.

        A stream that breaks (its member died) is opened again after the last revision received.
        """
        events: list[Any] = []
        pos = start
        while True:
            try:
                async with contextlib.aclosing(self._watch_stream(pos, prev_kv=True)) as stream:
                    async for resp in stream:
                        if resp.compact_revision:
                            return int(resp.compact_revision)
                        if resp.events:
                            # A response holds whole revisions, so resuming after its last is exact.
                            events.extend(resp.events)
                            pos = resp.events[-1].kv.mod_revision + 1
                            if pos > until:
                                return events
            except grpc.RpcError as e:
                if _code(e) not in _TRANSIENT:
                    raise
            await asyncio.sleep(0.1)

    def wait(self, after_revision: int, timeout: float) -> int:
        target = _etcd_rev(after_revision)
        with self._cond:
            self._cond.wait_for(lambda: self._seen > target or self._closed, timeout)
            return _store_rev(self._seen)

    def compact(self, revision: int) -> None:
        current = self._etcd_revision()
        target = min(_etcd_rev(revision) + 1, current)
        if target <= OFFSET:
            return
        try:
            self._call("compact", lambda c: c.kv.compact(target, physical=True, timeout=self.timeout))
        except StoreError as e:
            if "compacted" not in str(e):  # already compacted at or past target: nothing to do
                raise
        with self._cond:  # what etcd forgot, this backend forgets too
            self._buf_from = max(self._buf_from, _store_rev(target))
            i = bisect.bisect_left(self._buf, self._buf_from, key=lambda e: e.revision)
            del self._buf[:i]

    # ------------------------------------------------------------------ leases

    def grant_lease(self, ttl: int) -> Lease:
        """A lease of ``ttl`` seconds, kept alive in the background until revoked or abandoned."""
        resp = self._call("lease grant", lambda c: c.lease.grant(ttl, timeout=self.timeout))
        lease = Lease(self, int(resp.ID), int(resp.TTL))
        lease._task = self._submit(self._keepalive(lease)).result(self.timeout)
        return lease

    async def _keepalive(self, lease: Lease) -> asyncio.Task[None]:
        async def run() -> None:
            interval = max(lease.ttl / 3, 0.3)
            while True:
                await asyncio.sleep(interval)
                try:
                    call = self._client.lease.keep_alive(lease.id)
                    try:
                        async with asyncio.timeout(self.timeout):
                            resp = await call.read()
                    finally:
                        call.cancel()
                    if resp.TTL <= 0:
                        lease.alive = False
                        _log.warning("etcd lease %x expired", lease.id)
                        return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # keep trying until the TTL decides
                    _log.debug("etcd lease %x keepalive: %s", lease.id, e)
                    interval = 0.2
                else:
                    interval = max(lease.ttl / 3, 0.3)

        return asyncio.get_running_loop().create_task(run(), name=f"cilia-lease-{lease.id:x}")

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        self._follower.cancel()
        # Closing is best effort: a connection already broken must not stop the rest of the shutdown.
        with contextlib.suppress(Exception):
            self._submit(self._client.close()).result(5)
        if self._watch_channel is not None:
            with contextlib.suppress(Exception):  # as above
                self._submit(self._watch_channel.close()).result(5)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # a task that fails while cancelled: the loop stops anyway
            self._submit(cancel_all()).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _code(e: grpc.RpcError) -> Any:
    code = getattr(e, "code", None)
    return code() if callable(code) else None


def _never_sent(e: BaseException) -> bool:
    """gRPC failed the call on the client because no endpoint was connected: safe to send again."""
    text = str(e)
    return "connections to all backends failing" in text or "Failed to connect to remote host" in text


async def _with_timeout(aw: Awaitable[T], timeout: float) -> T:
    async with asyncio.timeout(timeout):
        return await aw


def open_etcd_store(endpoints: Sequence[str], **options: Any) -> Store:
    """A :class:`Store` on an etcd cluster (``host:port`` of one or more members); what
    ``open_store(backend="etcd", endpoints=...)`` returns."""
    return Store(EtcdBackend(endpoints, **options))

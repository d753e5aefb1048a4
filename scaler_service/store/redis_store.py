"""The Redis store (``--store redis://HOST:PORT/DB`` or ``rediss://``): replicas share models and work through it.

What lives in Redis (every key under ``foresight:``):

- ``fetch:due`` and ``fit:due``: sorted sets of series ids by the time their next fetch / refit is due;
- ``lease:fetch:<id>`` and ``lease:fit:<id>``: who holds that work now, set with ``SET NX PX`` and renewed while
  the work runs, so a replica that dies loses its claims when the lease expires and another takes the work;
- ``state:<id>``: the series' shared state after its last fetch (:mod:`scaler_service.store.state`);
- ``model:<id>``: a hash of the model's ``generation`` and its versioned JSON; a Lua script writes it only when
  the new generation is higher than the stored one, so a slow writer never replaces a newer model;
- ``seq`` and ``changes``: a counter and a sorted set of series ids by the counter value of their last change,
  which replicas poll to refresh their local mirrors (no Redis call is ever made while serving a request).

Claims, hand-overs and model writes are each one Lua script: atomic in Redis, one round trip. Redis's own
atomic operations are the only coordination; there is no membership list.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import redis.exceptions
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from forecasting.serving import ServingModel
from forecasting.store import FitClaim, NotDue, StoredModel, StoreUnavailable, model_from_text, model_to_text
from scaler_service.store.address import RedisAddress, RedisConfigError, parse_store_url, read_password
from scaler_service.store.base import FetchClaim, StoreHealth, StoreMode
from scaler_service.store.state import SeriesState, StateFormatError, decode_state, encode_state

log = structlog.get_logger(__name__)

PREFIX = "foresight:"
STATE_TTL_S = 86_400.0
"""A series nobody fetched for a day is forgotten by Redis."""
MODEL_TTL_S = 7 * 86_400.0
SWEEP_AFTER_S = 86_400.0
"""Schedule entries overdue by this much belong to series no replica follows any more: removed."""
MAX_CHANGES = 200_000
MAX_CHANGES_PER_POLL = 20_000

_CLAIM = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) > tonumber(ARGV[2]) then return {0, due, false} end
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]) / 1000, ARGV[1])
  local state = false
  if KEYS[3] then state = redis.call('GET', KEYS[3]) end
  return {1, '', state}
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then ttl = 0 end
return {0, tostring(tonumber(ARGV[2]) + ttl / 1000), false}
"""
"""KEYS: due zset, lease, [state]; ARGV: member, now (s), lease (ms), token -> {claimed, due, state}."""

_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""
"""KEYS: due zset, lease; ARGV: member, next due (s), token."""

_PUBLISH_STATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
local s = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[4], s, ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('DEL', KEYS[2])
return s
"""
"""KEYS: due zset, lease, state, changes, seq; ARGV: member, next due, token, state JSON, ttl (ms)."""

_SAVE_MODEL = """
local current = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if current >= tonumber(ARGV[1]) then return current end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'json', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local s = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], s, ARGV[3])
return tonumber(ARGV[1])
"""
"""KEYS: model hash, changes, seq; ARGV: generation, JSON, member, ttl (ms) -> the stored generation."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_REQUEST = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not due) or tonumber(due) > tonumber(ARGV[2]) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
return 1
"""


class RedisStore:
    """Implements :class:`scaler_service.store.base.SeriesStore` and :class:`forecasting.store.ModelStore`."""

    shared = True

    def __init__(
        self,
        address: RedisAddress,
        *,
        password: str | None = None,
        lease_s: float = 30.0,
        outage_grace_s: float = 600.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_health_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not (math.isfinite(lease_s) and lease_s >= 0.2):
            raise RedisConfigError(f"lease: must be at least 200ms, got {lease_s}s")
        self.address = address
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._clock = clock
        self.health = StoreHealth(grace_s=outage_grace_s, clock=clock, on_change=on_health_change)
        self._redis = redis.Redis(
            host=address.host,
            port=address.port,
            db=address.db,
            password=password,
            ssl=address.tls,
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 1.0),
            # One immediate retry covers a pooled connection the server closed (a restart); no backoff: a
            # store that is down is reported at once and the replica works alone.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            decode_responses=False,
            client_name="foresight-scaler",
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._finish = self._redis.register_script(_FINISH)
        self._publish = self._redis.register_script(_PUBLISH_STATE)
        self._save = self._redis.register_script(_SAVE_MODEL)
        self._renew = self._redis.register_script(_RENEW)
        self._request = self._redis.register_script(_REQUEST)
        self._held: dict[str, str] = {}
        """Leases this replica holds: lease key -> token (renewed until released)."""
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="store-leases", daemon=True)
        self._renewer.start()
        self.leases_lost_total = 0

    def __repr__(self) -> str:
        return f"RedisStore({self.address.url})"

    # --- plumbing ---------------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        self.health.before_call()
        try:
            result = fn()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise self.health.failed(exc) from None
        except redis.exceptions.ResponseError as exc:
            # e.g. LOADING after a restart, READONLY on a replica, NOAUTH: the store is not usable now.
            raise self.health.failed(exc) from None
        self.health.succeeded()
        return result

    def ping(self) -> bool:
        try:
            self._call(self._redis.ping)
        except StoreUnavailable:
            return False
        return True

    def _hold(self, lease_key: str, token: str) -> None:
        with self._held_lock:
            self._held[lease_key] = token

    def _release(self, lease_key: str) -> None:
        with self._held_lock:
            self._held.pop(lease_key, None)

    def _renew_loop(self) -> None:
        period = max(0.05, self.lease_s / 3)
        next_sweep = self._clock() + 60.0
        while not self._stop.wait(period):
            with self._held_lock:
                held = list(self._held.items())
            if held:
                try:
                    results = self._call(functools.partial(self._renew_all, held))
                except StoreUnavailable:
                    continue
                for (lease_key, token), renewed in zip(held, results, strict=True):
                    if renewed:
                        continue
                    with self._held_lock:
                        # Not lost when the work finished (and released it) since the list was taken.
                        lost = self._held.get(lease_key) == token
                        if lost:
                            del self._held[lease_key]
                    if lost:
                        self.leases_lost_total += 1
                        log.warning("lease lost before the work finished: another replica may redo it", lease=lease_key)
            now = self._clock()
            if now >= next_sweep:
                next_sweep = now + 60.0
                with contextlib.suppress(StoreUnavailable):
                    self._call(functools.partial(self._sweep, now))

    def _renew_all(self, held: list[tuple[str, str]]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for lease_key, token in held:
            self._renew(keys=[lease_key], args=[token, self._lease_ms], client=pipe)
        return [int(r) for r in pipe.execute()]

    def _sweep(self, now: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(PREFIX + "fetch:due", "-inf", now - SWEEP_AFTER_S)
        pipe.zremrangebyscore(PREFIX + "fit:due", "-inf", now - MODEL_TTL_S)
        pipe.zremrangebyrank(PREFIX + "changes", 0, -(MAX_CHANGES + 1))
        pipe.execute()

    def _claim_work(self, kind: str, member: str, now: float, state_key: str | None) -> tuple[str, float, Any]:
        lease_key = f"{PREFIX}lease:{kind}:{member}"
        token = secrets.token_hex(8)
        keys = [f"{PREFIX}{kind}:due", lease_key] + ([state_key] if state_key is not None else [])
        claimed, due, state = self._call(lambda: self._claim(keys=keys, args=[member, now, self._lease_ms, token]))
        if int(claimed) == 1:
            self._hold(lease_key, token)
            return token, now, state
        return "", float(due), None

    # --- the engine's side ---------------------------------------------------------------------------

    def register_series(self, series_id: str, now: float) -> None:
        self._call(lambda: self._redis.zadd(PREFIX + "fetch:due", {series_id: now}, nx=True))

    def claim_fetch(self, series_id: str, now: float) -> FetchClaim | NotDue:
        token, due, raw = self._claim_work("fetch", series_id, now, f"{PREFIX}state:{series_id}")
        if not token:
            return NotDue(due_at=due)
        state = None
        if raw:
            try:
                state = decode_state(raw)
            except StateFormatError as exc:
                log.warning(
                    "ignoring unreadable shared state: continuing from the local one", series=series_id, error=str(exc)
                )
        return FetchClaim(series_id=series_id, token=token, state=state)

    def publish_state(self, claim: FetchClaim, state: SeriesState, next_due_at: float) -> bool:
        lease_key = f"{PREFIX}lease:fetch:{claim.series_id}"
        self._release(lease_key)
        text = encode_state(state)
        keys = [PREFIX + "fetch:due", lease_key, f"{PREFIX}state:{claim.series_id}", PREFIX + "changes", PREFIX + "seq"]
        args: list[str | float] = [claim.series_id, next_due_at, claim.token, text, int(STATE_TTL_S * 1000)]
        written = int(self._call(lambda: self._publish(keys=keys, args=args)))
        if not written:
            self.leases_lost_total += 1
            log.warning("fetch lease expired before the state was handed on: result dropped", series=claim.series_id)
        return written > 0

    def load_states(self, series_ids: Iterable[str]) -> dict[str, SeriesState]:
        ids = list(series_ids)
        if not ids:
            return {}
        raws = self._call(lambda: self._redis.mget([f"{PREFIX}state:{i}" for i in ids]))
        out: dict[str, SeriesState] = {}
        for sid, raw in zip(ids, raws, strict=True):
            if raw:
                try:
                    out[sid] = decode_state(raw)
                except StateFormatError as exc:
                    log.warning("ignoring unreadable shared state", series=sid, error=str(exc))
        return out

    def changed_since(self, cursor: int) -> tuple[int, list[str]]:
        def poll(cursor: int) -> tuple[int, list[str]]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(PREFIX + "seq")
            pipe.zrangebyscore(
                PREFIX + "changes", f"({cursor}", "+inf", start=0, num=MAX_CHANGES_PER_POLL, withscores=True
            )
            seq_raw, items = pipe.execute()
            seq = int(seq_raw or 0)
            if seq < cursor:  # the store lost its data (restarted empty): read everything again
                return poll(0)
            if not items:
                return seq, []
            ids = [m.decode() for m, _ in items]
            newest = int(items[-1][1])
            # A full page means more is waiting: continue from its last entry next time.
            return (newest if len(items) >= MAX_CHANGES_PER_POLL else max(seq, newest)), ids

        result: tuple[int, list[str]] = self._call(lambda: poll(cursor))
        return result

    def model_generations(self, series_ids: Iterable[str]) -> dict[str, int]:
        ids = list(series_ids)
        if not ids:
            return {}

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for sid in ids:
                pipe.hget(f"{PREFIX}model:{sid}", "generation")
            return list(pipe.execute())

        raws = self._call(read)
        return {sid: int(raw) for sid, raw in zip(ids, raws, strict=True) if raw is not None}

    def mode(self, now: float) -> StoreMode:
        return self.health.mode(now)

    def describe(self, now: float) -> str:
        mode = self.health.mode(now)
        if mode is StoreMode.SHARED:
            return f"store: {self.address.url} reachable: work shared with the other replicas"
        since = self.health.down_since or now
        down = now - since
        if mode is StoreMode.ALONE:
            return (
                f"store: {self.address.url} unreachable for {down:.0f}s ({self.health.last_error}): serving from the "
                f"local mirror and fetching alone for {self.health.grace_s - down:.0f}s more"
            )
        return (
            f"store: {self.address.url} unreachable for {down:.0f}s, beyond the {self.health.grace_s:.0f}s grace: "
            "not fetching alone; series turn stale and are refused"
        )

    def close(self) -> None:
        self._stop.set()
        self._renewer.join(2.0)
        self._redis.close()

    # --- the model cache's side --------------------------------------------------------------------

    def load(self, key: str) -> StoredModel | None:
        generation, text = self._call(lambda: self._redis.hmget(f"{PREFIX}model:{key}", ["generation", "json"]))
        if generation is None or text is None:
            return None
        try:
            return StoredModel(generation=int(generation), model=model_from_text(key, text))
        except ValueError as exc:
            log.warning("ignoring unreadable shared model", key=key, error=str(exc))
            return None

    def save(self, key: str, model: ServingModel, generation: int) -> int:
        text = model_to_text(model)
        keys = [f"{PREFIX}model:{key}", PREFIX + "changes", PREFIX + "seq"]
        args: list[str | float] = [generation, text, key, int(MODEL_TTL_S * 1000)]
        return int(self._call(lambda: self._save(keys=keys, args=args)))

    def claim_fit(self, key: str, now: float) -> FitClaim | NotDue:
        token, due, _ = self._claim_work("fit", key, now, None)
        return FitClaim(key=key, token=token) if token else NotDue(due_at=due)

    def finish_fit(self, claim: FitClaim, next_due_at: float) -> None:
        lease_key = f"{PREFIX}lease:fit:{claim.key}"
        self._release(lease_key)
        done = int(
            self._call(
                lambda: self._finish(keys=[PREFIX + "fit:due", lease_key], args=[claim.key, next_due_at, claim.token])
            )
        )
        if not done:
            self.leases_lost_total += 1
            log.warning(
                "fit lease expired before the fit finished: the schedule was left to its new holder", key=claim.key
            )

    def request_fit(self, key: str, now: float) -> None:
        self._call(lambda: self._request(keys=[PREFIX + "fit:due"], args=[key, now]))

    def forget(self, key: str) -> None:
        # Other replicas may still follow the series: its shared state and schedule stay (swept when nobody does).
        return None


__all__ = ["RedisAddress", "RedisConfigError", "RedisStore", "parse_store_url", "read_password"]

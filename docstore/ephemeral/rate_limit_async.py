"""`AsyncRateLimiter`: GCRA in one Lua script — one round trip per decision, one number per key.

`limit` units per `period` seconds means: a burst of up to `limit` at once, then units come back
smoothly, one every ``period / limit`` seconds. Time is Redis server time, read inside the script.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable

from docstore.ephemeral.values import DecidedBy, FailurePolicy, LimitCheck, RateLimitResult
from docstore.errors import InvalidInput, RedisCommandError, ServiceUnavailable
from docstore.observability.messaging import count_rate_limit
from docstore.redis.client_async import RedisClient
from docstore.redis.core_async import AsyncRedisCore
from docstore.redis.keys import check_name, rate_limit_key
from docstore.redis.scripts_async import ScriptCall
from docstore.rules import Checker, PositiveInt, PositiveSeconds, check

logger = logging.getLogger("docstore.rate_limit")
_cost: Checker[int] = Checker(PositiveInt, "cost")


class AsyncRateLimiter:
    """One rate limit (e.g. 100 per minute) applied per client key.

    `policy` names the limit in keys and headers. When Redis is unreachable, `failure_policy`
    decides (allow by default); the result then says ``decided_by=FAILURE_POLICY``. A command
    Redis refuses raises `RedisCommandError`. `client` is a core (`AsyncRedisCore`) or a plain
    client.
    """

    def __init__(
        self,
        client: RedisClient | AsyncRedisCore,
        *,
        limit: int,
        period: float,
        policy: str = "default",
        failure_policy: FailurePolicy = FailurePolicy.ALLOW,
        deny_retry_after: float = 1.0,
    ) -> None:
        limit = check(PositiveInt, limit, "limit")
        period = check(PositiveSeconds, period, "period")
        check_name(policy, "policy")
        if "{" in policy or "}" in policy:
            raise InvalidInput("policy must not contain braces", field="policy")
        self.core = AsyncRedisCore.of(client)
        self.limit = limit
        self.period = float(period)
        self.policy = policy
        self.failure_policy = check(FailurePolicy, failure_policy, "failure_policy")
        self.deny_retry_after = check(PositiveSeconds, deny_retry_after, "deny_retry_after")
        # Whole microseconds per unit keep the script's arithmetic exact (integers < 2**53).
        self._interval_us = max(1, math.ceil(self.period * 1_000_000 / limit))
        self._tau = self._interval_us * limit
        self._tau_arg = str(self._tau).encode()
        self._script = self.core.script("rate_limit")
        self._outage_lock = threading.Lock()
        self._in_outage = False

    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        """Consume `cost` units for `key` if they are available; one round trip."""
        return await self._decide(key, cost, consume=True)

    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:
        """Whether `cost` units would be allowed now, without consuming anything."""
        return await self._decide(key, cost, consume=False)

    async def reset(self, key: str) -> None:
        """Forget `key`'s history: it gets its full limit back. Raises `ServiceUnavailable`."""
        redis_key = rate_limit_key(self.policy, check_name(key))
        with self.core.errors():
            await self.core.client.delete(redis_key)

    @staticmethod
    async def decide_together(
        checks: Iterable[LimitCheck[AsyncRateLimiter]],
    ) -> list[RateLimitResult]:
        """The decisions of several limiters (or keys) in one round trip, in the order of
        `checks`: each as its limiter's `hit` or `peek` would decide it alone (every script runs
        atomically, one after the other), its failure policy included.

        The limiters must share one Redis core (`InvalidInput` otherwise). A service asks its
        per-address and per-key limits together, say, instead of paying a round trip for each.
        """
        # Any iterable of checks; not one LimitCheck on its own.
        checks = list(checks) if isinstance(checks, Iterable) else [None]
        if not all(_is_check(check) for check in checks):
            raise InvalidInput(
                "checks must be LimitChecks of AsyncRateLimiters, consume a bool", field="checks"
            )
        if not checks:
            return []
        core = checks[0].limiter.core
        if any(check.limiter.core is not core for check in checks):
            raise InvalidInput(
                "the limiters decided together must share one RedisCore", field="checks"
            )
        calls = [c.limiter._script_call(c.key, c.cost, c.consume) for c in checks]
        script = checks[0].limiter._script  # the core's one registration, shared by its limiters
        # A Redis that refuses the script (full, an ACL) cannot decide either: the policy does.
        replies = await core.fail_open(
            lambda: script.run_many(calls), lambda error: error, also_refused=True
        )
        if isinstance(replies, ServiceUnavailable | RedisCommandError):
            return [check.limiter._policy_decision(check.key, replies) for check in checks]
        return [
            check.limiter._result(reply, check.cost)
            for check, reply in zip(checks, replies, strict=True)
        ]

    async def _decide(self, key: str, cost: int, *, consume: bool) -> RateLimitResult:
        keys, args = self._script_call(key, cost, consume)
        # The hot path: no context managers, arguments prepared once (see _tau_arg).
        reply = await self.core.fail_open(
            lambda: self._script(keys, *args),
            lambda error: self._policy_decision(key, error),
            also_refused=True,
        )
        if isinstance(reply, RateLimitResult):
            return reply
        return self._result(reply, cost)

    def _script_call(self, key: str, cost: int, consume: bool) -> ScriptCall:
        """The rate limit script's keys and arguments for one decision; `InvalidInput` for a bad
        key or cost (a strict integer: once checked, `cost` is the value the result uses)."""
        redis_key = rate_limit_key(self.policy, check_name(key))
        cost = _cost(cost)
        if cost > self.limit:
            raise InvalidInput(f"cost {cost} exceeds the limit {self.limit}", field="cost")
        return (redis_key,), (self._tau_arg, cost * self._interval_us, b"1" if consume else b"0")

    def _result(self, reply: int, cost: int) -> RateLimitResult:
        """The decision the script's reply says: the time until the key's whole limit is back
        (in µs), negative and less one when denied."""
        if self._in_outage:
            self._end_outage()
        allowed = reply >= 0
        count_rate_limit(self.policy, allowed, "redis")
        reset_after_us = reply if allowed else -reply - 1
        return RateLimitResult(
            allowed=allowed,
            limit=self.limit,
            # Never below 0: a key's state left by another limit of the same policy (a deploy
            # that lowered it) can run past this one's window.
            remaining=max(0, (self._tau - reset_after_us) // self._interval_us),
            reset_after=reset_after_us / 1_000_000,
            retry_after=(
                0.0
                if allowed
                else (reset_after_us + cost * self._interval_us - self._tau) / 1_000_000
            ),
            policy=self.policy,
            period=self.period,
        )

    def _policy_decision(
        self, key: str, exc: ServiceUnavailable | RedisCommandError
    ) -> RateLimitResult:
        allow = self.failure_policy is FailurePolicy.ALLOW
        count_rate_limit(self.policy, allow, "failure_policy")
        with self._outage_lock:
            first = not self._in_outage
            self._in_outage = True
        # Warn once per outage; every further decision is a debug line, not a flood.
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "rate limit %r for %r decided by failure policy %s: %s",
            self.policy,
            key,
            self.failure_policy.value,
            exc.message,
        )
        return RateLimitResult(
            allowed=allow,
            limit=self.limit,
            remaining=self.limit if allow else 0,
            reset_after=0.0 if allow else self.deny_retry_after,
            retry_after=0.0 if allow else self.deny_retry_after,
            policy=self.policy,
            period=self.period,
            decided_by=DecidedBy.FAILURE_POLICY,
        )

    def _end_outage(self) -> None:
        with self._outage_lock:
            if self._in_outage:
                self._in_outage = False
                logger.warning(
                    "rate limit %r: Redis at %s answers again", self.policy, self.core.address
                )


def _is_check(check: object) -> bool:
    return (
        isinstance(check, LimitCheck)
        and isinstance(check.limiter, AsyncRateLimiter)
        and isinstance(check.consume, bool)
    )


__all__ = ["AsyncRateLimiter", "DecidedBy", "FailurePolicy", "LimitCheck", "RateLimitResult"]

"""Metrics and the access log of every driver, written in one place from a step's
:class:`~gateway.http.steps.Record`.

The decision is counted when it is made (so ``paywall_decision_seconds`` never includes the
upstream's or the app's time); the access-log line is written when the response is done.
``started`` is a :func:`time.perf_counter` reading taken when the request arrived.
"""

from __future__ import annotations

import logging
from time import perf_counter

from gateway.http.callbacks import MODE as CALLBACK_MODE
from gateway.http.callbacks import logged_path
from gateway.http.forwarded import TrustedProxies
from gateway.http.request import RequestView
from gateway.http.steps import Record
from gateway.metrics import Metrics

__all__ = ["Observer"]

access_log = logging.getLogger("gateway.access")
decision_log = logging.getLogger("gateway.decision")


class Observer:
    def __init__(self, metrics: Metrics, trusted: TrustedProxies) -> None:
        self._metrics = metrics
        self._trusted = trusted

    def decided(self, record: Record, started: float) -> None:
        if record.mode == CALLBACK_MODE:
            return  # counted in paywall_callbacks_total: not an access decision
        self._metrics.request(record.mode, record.verdict, perf_counter() - started)

    def logged(self, request: RequestView, record: Record, status: int, started: float) -> None:
        outcome = record.outcome
        if outcome is not None and decision_log.isEnabledFor(logging.DEBUG):
            decision_log.debug(
                "decision",
                extra={
                    "fields": {
                        "path": record.path,
                        "verdict": outcome.verdict.value,
                        "reason": outcome.reason,
                        "cache": outcome.cache,
                        "customer_id": outcome.customer_id,
                        "fail_open": outcome.fail_open,
                        "expires_at": outcome.expires_at.isoformat()
                        if outcome.expires_at
                        else None,
                    }
                },
            )
        if not access_log.isEnabledFor(logging.INFO):
            return
        forwarded_for = request.headers.get("X-Forwarded-For")
        access_log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    # Never the query (it may hold a token), nor a callback's secret.
                    "path": logged_path(record.path or request.target.partition("?")[0]),
                    "status": status,
                    "verdict": record.verdict,
                    "reason": record.reason,
                    "cache": record.cache,
                    "customer_id": record.customer_id,
                    "client": self._trusted.client_address(request.peer, forwarded_for),
                    "duration_ms": round((perf_counter() - started) * 1000, 3),
                }
            },
        )

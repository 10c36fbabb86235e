"""Metrics and the access log of every driver, written in one place from a step's
:class:`~gateway.http.steps.Record`.

The decision is counted when it is made (so ``paywall_decision_seconds`` never includes the
upstream's or the app's time); the access-log line is logged when the response is done: its raw
values handed to the process's :mod:`gateway.access_log`, which formats them between requests
and writes them on a thread of its own (nothing to do at all while it is off). ``started`` is a
:func:`time.perf_counter` reading taken when the request arrived.
"""

from __future__ import annotations

import logging
from time import perf_counter

from gateway import access_log
from gateway.http.callbacks import MODE as CALLBACK_MODE
from gateway.http.callbacks import logged_path
from gateway.http.forwarded import TrustedProxies
from gateway.http.names import X_FORWARDED_FOR
from gateway.http.request import RequestView
from gateway.http.steps import Record
from gateway.metrics import Metrics

__all__ = ["Observer"]

decision_log = logging.getLogger("gateway.decision")
# Client addresses remembered per (peer, X-Forwarded-For): parsing them costs more than the
# rest of the line. Bounded, cleared when full; long headers are not remembered.
_CLIENTS_SIZE = 4096
_CLIENTS_MAX_HEADER = 256


class Observer:
    def __init__(self, metrics: Metrics, trusted: TrustedProxies) -> None:
        self._metrics = metrics
        self._trusted = trusted
        self._clients: dict[tuple[str | None, str | None], str] = {}

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
        writer = access_log.current
        if writer is None:
            return
        writer.log(
            request.method,
            # Never the query (it may hold a token), nor a callback's secret.
            logged_path(record.path or request.target.partition("?")[0]),
            status,
            record.verdict,
            record.reason,
            record.cache,
            record.customer_id,
            self._client(request),
            perf_counter() - started,
        )

    def _client(self, request: RequestView) -> str:
        key = (request.peer, request.headers.get(X_FORWARDED_FOR))
        client = self._clients.get(key)
        if client is None:
            client = self._trusted.client_address(*key)
            forwarded_for = key[1]
            if forwarded_for is None or len(forwarded_for) <= _CLIENTS_MAX_HEADER:
                if len(self._clients) >= _CLIENTS_SIZE:
                    self._clients.clear()
                self._clients[key] = client
        return client

"""The platform's callbacks: ``POST /_paywall/callbacks/{secret}``, written once for every driver.

The platform (plenigo / Frisbii Media, seed 003) posts ``{"entityType", "callbackType",
"entityId", "entity"}`` when something changes. A callback is a trigger, never a source of
truth: the receiver only *invalidates* the cached answers of the customers it names, so the
next request asks the platform again. Duplicate and out-of-order deliveries are therefore
harmless, and the callback path never calls the platform.

A driver runs three steps (:class:`Callback` is what :meth:`FrontEnd.route` returns):

1. :meth:`CallbackReceiver.admit`: source network, secret, method, content type and declared
   length, before any of the body is read (an Answer to send, or None to go on);
2. it reads at most :attr:`CallbackReceiver.body_limit` bytes of the body (one more than
   ``max_body``, so an oversized body is recognised without reading it all);
3. :meth:`CallbackReceiver.handle` validates the body, maps it to customers, invalidates, and
   gives the answer.

Answers (the platform reads the status; bodies are short JSON):

* 404: endpoint off (no secret configured: the plain 404 of any unknown ``/_paywall/`` path),
  wrong or missing secret, or a source outside ``allowed_networks`` (a 404 rather than a 403:
  a scanner learns nothing about the endpoint). Counted as ``bad_secret`` /
  ``forbidden_network``; nothing is read or invalidated.
* 405 (not POST), 415 (not ``application/json``), 413 (over ``max_body``), 400 (not UTF-8, not
  JSON, a duplicate key, a wrong shape, a customer-id field that is not a customer id).
* 200 ``invalidated``: the named customers' access answers (and for CUSTOMER CHANGE / DELETION
  their session validations) are gone from every tier; with Redis configured, only once Redis
  has the new generations and the invalidation is published to the other processes.
* 200 ``no_access_change``: INVOICE, INVOICE_CANCELLATION, INVOICE_CORRECTION and
  CUSTOMER_OPT_IN change no access: acknowledged.
* 202 ``ignored``: an entity type or callback type the seed does not document.
* 202 ``no_customer``: a documented callback naming no customer: acknowledged, counted and
  logged; nothing is flushed (what it may concern expires by ``access.max_ttl``).
* 503 ``unavailable``: Redis is configured and the invalidation did not reach it: the platform
  should deliver the callback again.

Logs never hold the secret: the access log's path for this endpoint is
:data:`LOGGED_PATH`, and no log line quotes the body or a header.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from gateway import strict_json
from gateway.access.service import AccessService
from gateway.config import CallbacksSettings
from gateway.http.forwarded import TrustedProxies
from gateway.http.replies import JSON, NO_STORE, Reply, text_reply
from gateway.http.request import RequestView
from gateway.http.steps import Answer, Callback, Record
from gateway.metrics import Metrics
from gateway.platform.models import is_customer_id

__all__ = [
    "CALLBACKS_PATH",
    "LOGGED_PATH",
    "MODE",
    "SECRET_HEADER",
    "Callback",
    "CallbackReceiver",
    "InvalidCallback",
    "ParsedCallback",
    "callback_step",
    "logged_path",
    "parse_callback",
]

log = logging.getLogger("gateway.callbacks")

CALLBACKS_PATH = "/_paywall/callbacks"
LOGGED_PATH = "/_paywall/callbacks/[redacted]"
SECRET_HEADER = "X-Paywall-Callback-Secret"  # noqa: S105 - a header name
MODE = "callback"
"""The Record mode of callback answers: logged, but not counted as access decisions."""
SOURCE = "callback"
"""The ``paywall_invalidations_total`` source."""

# The seed's table (PROVIDERS.md, seed 003): entity type -> its callback types.
CALLBACK_TYPES: dict[str, frozenset[str]] = {
    "APP_STORE_ORDER": frozenset({"CREATION"}),
    "APP_STORE_SUBSCRIPTION": frozenset({"CREATION", "CHANGE"}),
    "CUSTOMER": frozenset({"CREATION", "CHANGE", "DELETION"}),
    "CUSTOMER_OPT_IN": frozenset({"CHANGE"}),
    "FAILED_PAYMENT": frozenset({"PAYMENT_FAILED"}),
    "INVOICE": frozenset({"CREATION", "CHANGE"}),
    "INVOICE_CANCELLATION": frozenset({"CREATION"}),
    "INVOICE_CORRECTION": frozenset({"CREATION"}),
    "MULTIUSER_SUBSCRIPTION": frozenset({"CREATION", "CANCELLATION", "UNDO_CANCELLATION"}),
    "ORDER": frozenset({"CREATION"}),
    "PURCHASED_ADDON": frozenset({"CONDITIONS_FULFILLED"}),
    "SUBSCRIPTION": frozenset({"CREATION", "CHANGE", "CANCELLATION", "UNDO_CANCELLATION", "ENDED"}),
}
KNOWN_CALLBACK_TYPES = frozenset().union(*CALLBACK_TYPES.values())
NO_ACCESS_CHANGE = frozenset({"INVOICE", "INVOICE_CANCELLATION", "INVOICE_CORRECTION"}) | {
    "CUSTOMER_OPT_IN"
}
# Callbacks after which the customer's sessions must be validated again.
SESSION_CALLBACKS = frozenset({("CUSTOMER", "CHANGE"), ("CUSTOMER", "DELETION")})
# Fields that name an affected customer, at any depth of ``entity``. Never createdBy /
# changedBy: who acted, not who is affected.
CUSTOMER_FIELDS = frozenset({"customerId", "invoiceCustomerId", "deliveryCustomerId"})
MAX_CUSTOMERS = 1_000
NONE_LABEL = "none"  # label before the body was read
OTHER_LABEL = "other"  # label of an undocumented type

_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}").fullmatch
_LOGGED_PATH = re.compile(r"/+_paywall/+callbacks(?:/|$)").match
_MEDIA_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class ParsedCallback:
    """A valid callback: its types, the customers it names (distinct, in order), and whether
    their sessions end too."""

    entity_type: str
    callback_type: str
    customers: tuple[str, ...]
    sessions: bool

    @property
    def documented(self) -> bool:
        return self.callback_type in CALLBACK_TYPES.get(self.entity_type, frozenset())

    @property
    def labels(self) -> tuple[str, str]:
        """Bounded metric labels: a documented name, or ``other``."""
        entity = self.entity_type if self.entity_type in CALLBACK_TYPES else OTHER_LABEL
        kind = self.callback_type if self.callback_type in KNOWN_CALLBACK_TYPES else OTHER_LABEL
        return entity, kind


class InvalidCallback(ValueError):
    """A body that is not a valid callback; the message is short and quotes nothing."""


def logged_path(path: str) -> str:
    """``path`` as a log line may show it: any spelling of the callback endpoint becomes
    :data:`LOGGED_PATH` (the rest of it may be the secret)."""
    lowered = path.lower()
    if "callback" not in lowered and "%" not in lowered:
        return path
    if _LOGGED_PATH(unquote(lowered)):
        return LOGGED_PATH
    return path


def _customer_id(value: object, field: str) -> str | None:
    """A customer-id field's value as an id; None when it is empty (null, "")."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidCallback(f"{field} must be a string or an integer")
    text = str(value)
    if not is_customer_id(text):
        raise InvalidCallback(f"{field} is not a customer id")
    return text


def _customer_fields(entity: object) -> Iterator[tuple[str, object]]:
    """Every (field, value) of a customer-id field in ``entity``, at any depth (iteratively:
    the depth is bounded only by the body size)."""
    stack = [entity]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CUSTOMER_FIELDS and not isinstance(value, dict | list):
                    yield key, value
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def parse_callback(body: bytes) -> ParsedCallback:
    """The callback in ``body``; :class:`InvalidCallback` (a short reason) if it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCallback("the body is not UTF-8") from None
    try:
        data = strict_json.loads(text)
    except strict_json.RepeatedKey:
        raise InvalidCallback("duplicate key in a JSON object") from None
    except strict_json.JsonConstant as exc:
        raise InvalidCallback(str(exc)) from None
    except RecursionError:
        raise InvalidCallback("the JSON is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and integers too long to convert
        raise InvalidCallback("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidCallback("a callback is a JSON object")
    entity_type, callback_type = data.get("entityType"), data.get("callbackType")
    if not isinstance(entity_type, str) or not _TYPE_NAME(entity_type):
        raise InvalidCallback("entityType must be an upper-case name")
    if not isinstance(callback_type, str) or not _TYPE_NAME(callback_type):
        raise InvalidCallback("callbackType must be an upper-case name")
    if "entityId" not in data:
        raise InvalidCallback("entityId is missing")
    entity_id = data["entityId"]
    if isinstance(entity_id, bool) or not isinstance(entity_id, str | int):
        raise InvalidCallback("entityId must be a string or an integer")
    if isinstance(entity_id, str) and not 0 < len(entity_id) <= 64:
        raise InvalidCallback("entityId must be 1 to 64 characters")
    entity = data.get("entity")
    if entity is not None and not isinstance(entity, dict):
        raise InvalidCallback("entity must be an object or null")
    documented = callback_type in CALLBACK_TYPES.get(entity_type, frozenset())
    if not documented or entity_type in NO_ACCESS_CHANGE:
        # Acknowledged as they are: their ids are not read.
        return ParsedCallback(entity_type, callback_type, (), False)
    customers: dict[str, None] = {}
    if entity_type == "CUSTOMER":
        customer = _customer_id(entity_id, "entityId")
        if customer is None:
            raise InvalidCallback("entityId is not a customer id")
        customers[customer] = None
    for field, value in _customer_fields(entity):
        customer = _customer_id(value, field)
        if customer is not None:
            customers[customer] = None
            if len(customers) > MAX_CUSTOMERS:
                raise InvalidCallback(f"a callback names at most {MAX_CUSTOMERS} customers")
    sessions = (entity_type, callback_type) in SESSION_CALLBACKS
    return ParsedCallback(entity_type, callback_type, tuple(customers), sessions)


def _json_reply(status: int, result: str, message: str, *headers: tuple[str, str]) -> Reply:
    body = json.dumps({"result": result, "message": message}) + "\n"
    return Reply(
        status, [("Content-Type", JSON), ("Cache-Control", NO_STORE), *headers], body.encode()
    )


class CallbackReceiver:
    """Admits, validates and applies callbacks for one ``[callbacks]`` configuration."""

    def __init__(
        self, settings: CallbacksSettings, trusted: TrustedProxies, metrics: Metrics
    ) -> None:
        self._secret = settings.secret.get_secret_value().encode()
        self._allowed = TrustedProxies(settings.allowed_networks)
        self._restricted = bool(settings.allowed_networks)
        self._trusted = trusted
        self._metrics = metrics
        self.max_body = settings.max_body

    @property
    def body_limit(self) -> int:
        """How much of the body a driver reads at most: one byte over ``max_body``."""
        return self.max_body + 1

    # --- before the body ----------------------------------------------------------------------

    def admit(self, step: Callback) -> Answer | None:
        """The answer for a request refused before its body is read; None: read the body (at
        most :attr:`body_limit` bytes) and :meth:`handle` it."""
        request = step.request
        headers = request.headers
        if self._restricted:
            forwarded = ", ".join(headers.getall("X-Forwarded-For", []))
            client = self._trusted.client_address(request.peer, forwarded or None)
            if not self._allowed.is_trusted(client):
                log.warning("callback refused: source %s is not in allowed_networks", client)
                return self._not_found("forbidden_network")
        if not self._secret_matches(step):
            return self._not_found("bad_secret")
        if request.method != "POST":
            reply = _json_reply(405, "method_not_allowed", "use POST", ("Allow", "POST"))
            return self._answer(reply, "method_not_allowed")
        types = headers.getall("Content-Type", [])
        media = types[0].partition(";")[0].strip().lower() if len(types) == 1 else ""
        if media != _MEDIA_TYPE:
            reply = _json_reply(415, "unsupported_media_type", "send application/json")
            return self._answer(reply, "unsupported_media_type")
        lengths = headers.getall("Content-Length", [])
        if len(lengths) == 1 and lengths[0].strip().isdigit():
            if int(lengths[0]) > self.max_body:
                return self.too_large()
        elif lengths:
            return self._bad_request("malformed Content-Length")
        return None

    def _secret_matches(self, step: Callback) -> bool:
        given = step.request.headers.getall(SECRET_HEADER, [])
        if step.path_secret:
            given = [step.path_secret, *given]
        if not given or len(given) > 2:
            return False
        matches = True
        for candidate in given:
            # Constant time, and every candidate compared (no early exit on the first).
            value = candidate.encode("utf-8", "surrogatepass")
            matches = hmac.compare_digest(value, self._secret) and matches
        return matches

    def too_large(self) -> Answer:
        reply = _json_reply(413, "too_large", f"the body exceeds {self.max_body} bytes")
        return self._answer(reply, "too_large")

    # --- the body -----------------------------------------------------------------------------

    async def handle(self, step: Callback, body: bytes, service: AccessService) -> Answer:
        """Validate ``body`` (at most :attr:`body_limit` bytes, as read), invalidate, answer."""
        if len(body) > self.max_body:
            return self.too_large()
        try:
            parsed = parse_callback(body)
        except InvalidCallback as exc:
            return self._bad_request(str(exc))
        entity, kind = parsed.labels
        if not parsed.documented:
            reply = _json_reply(202, "ignored", "not a documented callback type; ignored")
            return self._answer(reply, "ignored", entity, kind)
        if parsed.entity_type in NO_ACCESS_CHANGE:
            reply = _json_reply(200, "no_access_change", "acknowledged; changes no access")
            return self._answer(reply, "no_access_change", entity, kind)
        if not parsed.customers:
            log.warning(
                "callback %s %s names no customer: nothing invalidated",
                entity,
                kind,
            )
            reply = _json_reply(202, "no_customer", "names no customer; nothing invalidated")
            return self._answer(reply, "no_customer", entity, kind)
        try:
            for customer in parsed.customers:
                await service.invalidate_customer(customer, SOURCE, sessions=parsed.sessions)
        except Exception as failure:  # Redis (the shared tier) did not take it: ask for a retry
            log.warning("callback %s %s not applied: %s", entity, kind, type(failure).__name__)
            return self.unavailable(entity, kind)
        reply = _json_reply(200, "invalidated", f"invalidated {len(parsed.customers)} customer(s)")
        return self._answer(reply, "invalidated", entity, kind)

    def unavailable(self, entity: str = NONE_LABEL, kind: str = NONE_LABEL) -> Answer:
        """503: the invalidation could not be done (or confirmed); the platform retries."""
        reply = _json_reply(
            503, "unavailable", "invalidation not confirmed; retry", ("Retry-After", "5")
        )
        return self._answer(reply, "unavailable", entity, kind)

    # --- shared -------------------------------------------------------------------------------

    def _not_found(self, result: str) -> Answer:
        # The same answer as any unknown /_paywall/ path.
        return self._answer(text_reply(404, "Not found\n"), result)

    def _bad_request(self, message: str) -> Answer:
        return self._answer(_json_reply(400, "bad_request", message), "bad_request")

    def _answer(
        self, reply: Reply, result: str, entity: str = NONE_LABEL, kind: str = NONE_LABEL
    ) -> Answer:
        self._metrics.callback(entity, kind, result)
        return Answer(reply, Record(MODE, result, result, path=LOGGED_PATH))


def callback_step(request: RequestView, path: str) -> Callback | None:
    """The :class:`Callback` step for a normalised ``path`` of the endpoint (with or without a
    secret segment), else None."""
    if path == CALLBACKS_PATH:
        return Callback(request, None)
    if path.startswith(CALLBACKS_PATH + "/"):
        return Callback(request, path[len(CALLBACKS_PATH) + 1 :] or None)
    return None

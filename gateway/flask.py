"""Per-view access rules for a Flask app behind :class:`gateway.wsgi.PaywallMiddleware`.

::

    app.wsgi_app = PaywallMiddleware(app.wsgi_app, config="gateway.toml")

    @app.get("/reports/<name>")
    @require_access("premium", "archive", require="any")
    def report(name: str) -> str:
        customer = request.environ["paywall.decision"].customer_id
        ...

The path rules of the configuration decide first, as for every request (the view's path is
usually covered by a public route); the decorator then asks the access service about the view's
own rule with :meth:`~gateway.access.service.AccessService.check_rule`, through the same
middleware, runtime and caches: from memory on the worker thread when it can
(:meth:`~gateway.access.service.AccessService.peek_rule`), else on the middleware's loop thread.
A refusal is the policy's own answer (:meth:`~gateway.http.replies.Pages.deny`: the login
redirect or 401, the 403 paywall page, the 503; HTML or JSON), as the middleware gives at a
protected path. A grant replaces ``environ["paywall.decision"]`` and the ``X-Paywall-*`` headers
the app sees with the view's decision, and makes the response private.

Only the visitor's session counts here: a transfer token was already handed off by the
middleware on a GET (303 + cookie), and on other methods it is ignored.

The only module of the gateway that imports Flask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

import flask

from gateway.access.outcome import Credentials
from gateway.core.policy import AccessRule
from gateway.http.steps import Record, decision, decision_headers
from gateway.wsgi import CONTEXT_KEY, DECISION_KEY, RequestContext

__all__ = ["check_view", "require_access"]

F = TypeVar("F", bound=Callable[..., Any])


def require_access(
    *access_right_ids: str, require: Literal["any", "all"] = "any"
) -> Callable[[F], F]:
    """A view decorator: the view runs only for visitors who hold ``any`` (or ``all``) of the
    given access-right ids; everyone else gets the gateway's refusal. ValueError without ids."""
    rule = AccessRule(tuple(dict.fromkeys(access_right_ids)), require)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refusal = check_view(flask.request.environ, rule)
            if refusal is not None:
                return refusal
            return view(*args, **kwargs)

        return cast(F, guarded)

    return decorate


def check_view(environ: dict[str, Any], rule: AccessRule) -> flask.Response | None:
    """None when the visitor of this request holds ``rule``; else the refusal to send.

    RuntimeError when the request did not pass through a :class:`PaywallMiddleware` (the app
    is not wrapped: failing loudly beats serving the view to everyone)."""
    context = environ.get(CONTEXT_KEY)
    if not isinstance(context, RequestContext):
        raise RuntimeError(
            "require_access needs the app wrapped: app.wsgi_app = PaywallMiddleware(...)"
        )
    middleware, check = context.middleware, context.check
    credentials = Credentials(session_token=check.access.credentials.session_token)
    outcome = middleware.decide_rule(credentials, rule)
    path, verdict = check.visitor.path, outcome.verdict
    context.record = Record(
        "wsgi", verdict.value, outcome.reason, outcome.cache, outcome.customer_id, path, outcome
    )
    refusal = middleware.frontend.view_refusal(check, outcome)
    if refusal is None:
        context.private = True
        environ[DECISION_KEY] = decision(outcome)
        for key in [key for key in environ if key.startswith("HTTP_X_PAYWALL_")]:
            del environ[key]  # the page's decision headers (the client's are long gone)
        for name, value in decision_headers(outcome).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        return None
    return flask.Response(refusal.body, status=refusal.status, headers=refusal.headers)

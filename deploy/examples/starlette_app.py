"""A Starlette site behind the paywall middleware: public pages, and premium pages that know
their reader.

Against the platform simulator, from the repository root::

    make sandbox                                                  # terminal 1, port 8090
    .venv/bin/uvicorn --app-dir deploy/examples starlette_app:app --port 8000   # terminal 2

    curl -i http://127.0.0.1:8000/                                # public
    curl -i http://127.0.0.1:8000/premium/story                   # 303 to the login page
    curl -i -H 'Cookie: paywall_session=demo-session-plain' http://127.0.0.1:8000/premium/story
    curl -i -H 'Cookie: paywall_session=demo-session-no-rights' \\
        http://127.0.0.1:8000/premium/story                       # 403 paywall page

The configuration is built in code here; a real site passes its TOML file instead:
``PaywallMiddleware(app, config="gateway.toml")`` (every key can also be overridden with
``PAYWALL_<SECTION>__<KEY>`` variables, e.g. ``PAYWALL_PLATFORM__API_TOKEN``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.asgi import PaywallMiddleware
from gateway.config import Settings
from gateway.logs import configure_logging

settings = Settings(
    platform={"base_url": "http://127.0.0.1:8090/api/v3.0"},  # `make sandbox`
    server={
        "cookie_secure": False,  # plain http on localhost
        "login_url": "https://www.example.com/login",
    },
    routes=[
        {"path": "/premium/**", "access_rights": ["premium"]},
        {"path": "/**", "public": True},
    ],
)


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse("<h1>Front page</h1><p><a href='/premium/story'>A premium story</a></p>")


async def premium(request: Request) -> HTMLResponse:
    # The middleware let the request through: the decision says who is reading.
    decision = request.state.paywall
    return HTMLResponse(
        f"<h1>{request.path_params['slug']}</h1>"
        f"<p>For subscriber {decision.customer_id} ({decision.access}, cache {decision.cache}).</p>"
    )


configure_logging(  # the gateway's JSON access log on stderr (optional)
    settings.logging,
    secret_cookie=settings.server.session_cookie,
    secret_params=[settings.server.transfer_token_param],
)
app = PaywallMiddleware(
    Starlette(routes=[Route("/", home), Route("/premium/{slug}", premium)]), config=settings
)

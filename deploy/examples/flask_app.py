"""A Flask site behind the paywall's WSGI middleware: public pages, premium pages that know their
reader, and one view with an access rule of its own (``gateway.flask.require_access``).

Against the platform simulator, from the repository root::

    make sandbox                                                  # terminal 1, port 8090
    .venv/bin/gunicorn -k gthread -w 2 --threads 4 -b 127.0.0.1:8000 \\
        --chdir deploy/examples flask_app:app                     # terminal 2

    curl -i http://127.0.0.1:8000/                                # public
    curl -i http://127.0.0.1:8000/premium/story                   # 303 to the login page
    curl -i -H 'Cookie: paywall_session=demo-session-plain' http://127.0.0.1:8000/premium/story
    curl -i -H 'Cookie: paywall_session=demo-session-no-rights' \\
        http://127.0.0.1:8000/premium/story                       # 403 paywall page
    curl -i -H 'Cookie: paywall_session=demo-session-plain' http://127.0.0.1:8000/reports/q3
    curl -i -H 'Accept: application/json' http://127.0.0.1:8000/reports/q3          # 401 JSON

``/reports/*`` is public by the path rules; the view's decorator requires ``archive``. Each
gunicorn worker runs the gateway's event loop in a thread of its own (started on its first
request that needs the platform); cached decisions are answered on the worker's own threads.
The configuration is built in code here; a real site passes its TOML file instead:
``PaywallMiddleware(app.wsgi_app, config="gateway.toml")`` (every key can also be overridden
with ``PAYWALL_<SECTION>__<KEY>`` variables, e.g. ``PAYWALL_PLATFORM__API_TOKEN``).
"""

from __future__ import annotations

from flask import Flask, request

from gateway.config import Settings
from gateway.flask import require_access
from gateway.logs import configure_logging
from gateway.wsgi import PaywallMiddleware

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

app = Flask(__name__)


@app.get("/")
def home() -> str:
    return "<h1>Front page</h1><p><a href='/premium/story'>A premium story</a></p>"


@app.get("/premium/<slug>")
def premium(slug: str) -> str:
    # The middleware let the request through: the decision says who is reading.
    decision = request.environ["paywall.decision"]
    return (
        f"<h1>{slug}</h1>"
        f"<p>For subscriber {decision.customer_id} ({decision.access}, cache {decision.cache}).</p>"
    )


@app.get("/reports/<name>")
@require_access("archive")
def report(name: str) -> str:
    decision = request.environ["paywall.decision"]  # the view's own decision
    return f"<h1>Report {name}</h1><p>For {decision.customer_id}, who holds the archive.</p>"


configure_logging(  # the gateway's JSON access log on stderr (optional)
    settings.logging,
    secret_cookie=settings.server.session_cookie,
    secret_params=[settings.server.transfer_token_param],
)
app.wsgi_app = PaywallMiddleware(app.wsgi_app, config=settings)  # type: ignore[method-assign]

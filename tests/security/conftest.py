"""Fixtures for attacks run through every front-end: the gateway on loopback in either mode
(``start_stack``, from tests/web) and the shipped nginx configurations in front of it
(``start_site``, from tests/deploy). Both ``http`` fixtures are the same: a client session
without a cookie jar."""

from tests.deploy.test_nginx import http, nginx_binary, start_site
from tests.web.conftest import start_stack

__all__ = ["http", "nginx_binary", "start_site", "start_stack"]

"""The framework-neutral side of the HTTP front-ends: nothing here imports aiohttp or any other
web framework, so every driver (the aiohttp server, and later ASGI and WSGI middleware) and the
log redactor read requests by the same rules."""

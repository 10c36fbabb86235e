"""The runnable demo: a small content site behind the gateway, and the launcher that starts it.

``python -m gateway.demo`` (``make demo``) starts three processes on loopback — the platform
simulator, the demo content site (:mod:`gateway.demo.site`) and the gateway in proxy mode
(``config/demo.toml``) — and prints the URLs to try. Nothing here is used by the gateway itself.
"""

"""Files shipped inside the package: the default paywall page and the simulator's seed data.

They live beside this module (``gateway/resources/``) and are package data, so a wheel
install (``pip install .``) has them as well as a checkout does; nothing here reads the
repository's ``config/`` directory.

- ``paywall.html``: the deny-page template used when ``[server] paywall_template`` is empty.
  Copy it to change the page; its comment lists the placeholders.
- ``sandbox-data.json``: the seed data of ``paywall-gateway sandbox`` (and the demo) when no
  ``--data`` is given; its format is the docstring of :mod:`gateway.sandbox.data`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = [
    "PAYWALL_TEMPLATE",
    "SANDBOX_SEED",
    "default_paywall_template",
    "paywall_template_path",
    "sandbox_seed",
]

PAYWALL_TEMPLATE = "paywall.html"
SANDBOX_SEED = "sandbox-data.json"


def _path(name: str) -> Path:
    """The file ``name`` of this package on disk.

    pip installs packages as directories, so the resource is a real file; a package imported
    from a zip archive would not give one, and is refused with a message rather than half-run.
    """
    resource = files(__name__).joinpath(name)
    if not isinstance(resource, Path):
        raise RuntimeError(f"gateway.resources: {name} is not a file on disk ({resource!r})")
    return resource


def paywall_template_path() -> Path:
    """Where the default paywall page (``paywall.html``) is installed."""
    return _path(PAYWALL_TEMPLATE)


def default_paywall_template() -> str:
    """The text of the default paywall page (a :class:`string.Template`)."""
    return files(__name__).joinpath(PAYWALL_TEMPLATE).read_text(encoding="utf-8")


def sandbox_seed() -> Path:
    """Where the simulator's default seed data (``sandbox-data.json``) is installed."""
    return _path(SANDBOX_SEED)

"""The platform adapter: talks to the plenigo API and hands the core plain payloads.

:class:`PlenigoClient` implements :class:`IdentityProvider` and :class:`AccessProvider`; every
error it raises is a :class:`gateway.errors.PlatformError`.
"""

from gateway.platform.client import PlenigoClient
from gateway.platform.models import to_access_payload
from gateway.platform.provider import AccessProvider, IdentityProvider

__all__ = ["AccessProvider", "IdentityProvider", "PlenigoClient", "to_access_payload"]

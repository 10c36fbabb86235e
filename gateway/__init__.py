"""paywall-gateway: access checks for content sold through the plenigo platform."""

__version__ = "0.1.0"

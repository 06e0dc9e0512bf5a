"""Bulwark: a self-hosted Defender for Endpoint machine-action API."""

__version__ = "0.1.0"

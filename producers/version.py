"""The SDK's version (its distribution's; `sdk.version` of every event it makes)."""

__version__ = "0.1.0"

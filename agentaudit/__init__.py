"""agentaudit: event-streaming audit and monitoring pipeline for AI agents."""

__version__ = "0.1.0"

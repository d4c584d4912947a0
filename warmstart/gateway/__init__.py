"""The gateway: OpenAI-compatible HTTP in front of the pool; holds requests while a replica starts."""

"""warmstart: a control plane that makes self-hosted LLMs answer as if they were always loaded."""

__version__ = "0.1.0"

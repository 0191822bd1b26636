"""DS01: a fair, safe, self-service ML workstation on a shared GPU server."""

__version__ = "0.1.0"

"""shopctl: a local platform for building Python microservices."""

__version__ = "0.1.0"

"""Shared plumbing of the demo-shop services.

Every service is started with the same environment contract by both shopctl runtimes
(docker and local); see `shopkit.settings.ServiceEnv`.
"""

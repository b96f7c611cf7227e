"""Runtimes: where the shop's processes live (docker containers or local subprocesses).

Both implement `shopctl.runtime.base.Runtime`; Consul registration is a separate concern
(`shopctl.registry`) that works the same whichever runtime placed the service.
"""

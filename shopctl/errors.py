"""One exception root for everything a user can get wrong or the world can refuse.

Every layer raises a subclass carrying a message written for a person (what is wrong,
where, what to do) and the exit code the CLI returns. The CLI catches ShopctlError in
one place and prints it; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STUCK = 3


class ShopctlError(Exception):
    """An error whose message is meant for the user."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(ShopctlError):
    """The command line asked for something that cannot be (unknown service, bad flag)."""

    exit_code = EXIT_USAGE


class ConfigError(ShopctlError):
    """shop.yaml is missing, unreadable or invalid. Carries every problem found at once."""

    exit_code = EXIT_USAGE


class RuntimeUnavailable(ShopctlError):
    """Docker, Consul, RabbitMQ or a binary we need is not reachable."""


class OperationFailed(ShopctlError):
    """The operation ran but did not succeed (a build failed, a service stayed unhealthy)."""


class LabError(OperationFailed):
    """The local multi-node lab (shopctl.lab) could not be brought up or used: a node's
    engine that never answered (the message carries its log's tail), a swarm that did not
    form, an image the host engine does not have to load onto the nodes."""


class ProjectStateError(ShopctlError):
    """The project's state folder (.shopctl/: token secret, saga log, local runtime files)
    cannot be created, written or read: a read-only folder, another user's files, a full
    disk. Raised where the state is touched (shopctl.state), with the path and what to do."""


class Cancelled(Exception):
    """The user interrupted the work (Ctrl+C, SIGTERM): raised by the core where it
    checks its cancellation token (a threading.Event the CLI sets from its signal
    handler). Not a ShopctlError: what to tell the user (what was left running) is the
    command's to say, and no `except ShopctlError` on the way may swallow it."""

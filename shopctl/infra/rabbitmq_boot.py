"""A quicker RabbitMQ boot: its modules are loaded in parallel before it asks for them.

Why: while it boots, RabbitMQ 3.10 looks for its boot steps in the attributes of every
module of every application it has loaded (~940 modules: its own and OTP's). Erlang
loads a module the first time it is touched, one at a time, each looked up through the
whole code path (~90 folders with Debian's plugins), so that scan alone takes 2.5-3.5 s
of a 7 s boot on these 2-core machines, with nothing else to show for it.
`code:ensure_modules_loaded/1` loads a whole list at once, reading and preparing the
modules in parallel; run in a process of its own from the first instant of the node, it
is done (or nearly) when RabbitMQ's scan comes, which then finds every module loaded.
Measured on this machine's image: 7.0-7.6 s from `docker run` to AMQP answering, 2.7 s
with the preload (bench/README.md, "RabbitMQ's boot").

PRELOAD is the Erlang the node runs: the closure of the applications `rabbit` and
`rabbitmq_prelaunch` need (what RabbitMQ itself will load), then their modules. Nothing
else changes: a node whose preload fails (an older RabbitMQ without these applications)
boots as before, only slower (`persistent_term:get(shopctl_preload, none)` in the node
says whether it ran and how many modules it loaded); RabbitMQ's own loading of a module
the preload is loading meanwhile waits on Erlang's code server, as any two loads do.

It runs from `ERL_AFLAGS`, the only flags erl reads before the command line: RabbitMQ's
script puts its own `-s rabbit boot`, which returns only once the broker runs, ahead of
every flag it lets one add. The image's command is a wrapper that sets it (so the image
boots the same under shopctl, compose or `docker run`); the local runtime sets it in the
broker's environment. `rabbitmqctl` never gets it.
"""

from __future__ import annotations

from pathlib import Path

PRELOAD = """\
%% shopctl: load RabbitMQ's modules in parallel before its boot asks for them one at a
%% time (see shopctl/infra/rabbitmq_boot.py).
Closure = fun Walk([], Seen) -> Seen;
              Walk([App | Rest], Seen) ->
                  case lists:member(App, Seen) of
                      true -> Walk(Rest, Seen);
                      false ->
                          _ = application:load(App),
                          Needs = [Dep || Key <- [applications, included_applications],
                                          {ok, Deps} <- [application:get_key(App, Key)],
                                          Dep <- Deps],
                          Walk(Needs ++ Rest, [App | Seen])
                  end
          end,
Apps = Closure([rabbitmq_prelaunch, rabbit], []),
Modules = lists:append([Ms || App <- Apps, {ok, Ms} <- [application:get_key(App, modules)]]),
Loaded = code:ensure_modules_loaded(Modules),
%% For `rabbitmqctl eval 'persistent_term:get(shopctl_preload, none).'`: did it run.
persistent_term:put(shopctl_preload, {Loaded, length(Modules)}).
"""

# Where the shopctl/rabbitmq image keeps the preload and the command that uses it.
IMAGE_DIR = "/usr/lib/rabbitmq/shopctl"
IMAGE_PRELOAD = f"{IMAGE_DIR}/preload.erl"
IMAGE_SERVER = f"{IMAGE_DIR}/rabbitmq-server"
DEBIAN_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def eval_flag(preload: str | Path) -> str | None:
    """The erl flag that runs the preload file in a process of its own, for ERL_AFLAGS;
    None for a path erl's flag parsing cannot carry (a quote or backslash in it): the
    broker then boots without it."""
    path = str(preload)
    if any(char in path for char in "'\"\\"):
        return None
    return f"-eval 'spawn(fun() -> file:script(\"{path}\") end)'"


def with_preload(env_value: str | None, preload: str | Path) -> str | None:
    """ERL_AFLAGS with the preload flag in front of whatever the caller already had."""
    flag = eval_flag(preload)
    if flag is None:
        return env_value
    return f"{flag} {env_value}" if env_value else flag


# The flag as it stands inside the wrapper's double-quoted shell string.
_WRAPPER_FLAG = (eval_flag(IMAGE_PRELOAD) or "").replace('"', '\\"')
IMAGE_WRAPPER = f"""\
#!/bin/sh
# shopctl: RabbitMQ with its modules loaded in parallel while it boots
# (shopctl/infra/rabbitmq_boot.py); otherwise the same as {DEBIAN_SERVER}.
ERL_AFLAGS="{_WRAPPER_FLAG} ${{ERL_AFLAGS:-}}"
export ERL_AFLAGS
exec {DEBIAN_SERVER} "$@"
"""

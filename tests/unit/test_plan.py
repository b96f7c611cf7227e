"""The plan `up` applies: decided from hashes and observed states, with no side effects."""

from __future__ import annotations

from shopctl.plan import Action, make_plan
from shopctl.units import ServiceState, split_instance

LEVELS = [["users", "inventory"], ["catalog"], ["orders"]]


def running(name: str, config_hash: str, state: str = "running") -> ServiceState:
    return ServiceState(service=name, state=state, config_hash=config_hash)


def actions(plan) -> dict[str, str]:
    return {step.service: step.action.value for step in plan.steps}


def test_nothing_running_creates_everything_in_dependency_levels():
    plan = make_plan(LEVELS, {"users": "a", "inventory": "b", "catalog": "c", "orders": "d"}, {})
    assert actions(plan) == dict.fromkeys(["users", "inventory", "catalog", "orders"], "create")
    assert [[s.service for s in level] for level in plan.levels] == LEVELS


def test_same_hash_running_is_noop_and_changed_hash_recreates():
    observed = {"users": running("users", "a"), "catalog": running("catalog", "old")}
    plan = make_plan(LEVELS, {"users": "a", "catalog": "new"}, observed)
    assert actions(plan) == {"users": "noop", "catalog": "recreate"}
    assert [s.service for s in plan.changes] == ["catalog"]


def test_exited_with_same_hash_is_started_again():
    plan = make_plan(LEVELS, {"users": "a"}, {"users": running("users", "a", state="exited")})
    step = plan.steps[0]
    assert step.action is Action.START
    assert step.reason == "exited"


def test_second_up_with_nothing_changed_is_all_noop():
    hashes = {"users": "a", "inventory": "b"}
    observed = {name: running(name, h) for name, h in hashes.items()}
    plan = make_plan(LEVELS, hashes, observed)
    assert plan.changes == []
    assert plan.to_dict() == [
        {"service": "users", "instance": "users", "action": "noop", "reason": "up to date"},
        {"service": "inventory", "instance": "inventory", "action": "noop",
             "reason": "up to date"},
    ]


def test_services_not_asked_for_are_left_out_and_empty_levels_dropped():
    plan = make_plan(LEVELS, {"orders": "d"}, {})
    assert [[s.service for s in level] for level in plan.levels] == [["orders"]]


def test_replicas_plan_an_instance_each_and_remove_those_beyond():
    levels = [["users"], ["payments"]]
    running = {name: ServiceState(split_instance(name)[0], "running", config_hash="h",
                                  index=split_instance(name)[1])
               for name in ["users", "payments", "payments.2", "payments.3", "payments.4"]}
    # payments scaled from 4 to 2, its second instance replaced by new code; users as it was
    plan = make_plan(levels, {"users": "h", "payments": "h", "payments.2": "new"}, running)
    assert [(s.instance, s.action.value) for s in plan.steps] == [
        ("users", "noop"), ("payments", "noop"), ("payments.2", "recreate"),
        ("payments.3", "remove"), ("payments.4", "remove")]
    assert {s.service for s in plan.steps[1:]} == {"payments"}
    assert plan.built == ["payments"]  # built once, whatever the number of instances
    # scaled up: new instances are created; a service not planned keeps its extras
    plan = make_plan(levels, {"users": "h", "users.2": "h"}, running)
    assert [(s.instance, s.action.value) for s in plan.steps] == [
        ("users", "noop"), ("users.2", "create")]

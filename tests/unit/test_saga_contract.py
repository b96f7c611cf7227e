"""The participant contract as data: templates, conventions, answers, input, and the
shop.yaml checks of declared actions (with their file:line:col)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shopctl.config import load_config
from shopctl.config.problems import ConfigInvalid
from shopctl.errors import UsageError
from shopctl.saga import contract, inputs, template
from shopctl.saga.engine import snapshot

DATA = {
    "saga": {"id": "s1", "name": "delivery", "key": "saga-s1-book"},
    "input": {"parcel": "p-7", "weight": 2.5},
    "context": {"parcel": "p-7", "slots": [{"id": 3, "at": "09:00"}, {"id": 4, "at": "10:00"}],
                "booking_id": 12},
    "steps": {},
}


# -- templates ---------------------------------------------------------------------------

def test_a_whole_expression_keeps_its_type_and_text_is_interpolated():
    rendered = template.render({
        "weight": "{{ input.weight }}",
        "ids": "{{ context.slots[*].id }}",
        "pairs": "{{ context.slots[*].{slot: id, time: at} }}",
        "label": "parcel {{ input.parcel }} slot {{ context.slots[0].id }}",
        "literal": 5, "nested": ["{{ saga.key }}", {"k": "{{ to_string(context.booking_id) }}"}],
    }, DATA)
    assert rendered == {
        "weight": 2.5, "ids": [3, 4],
        "pairs": [{"slot": 3, "time": "09:00"}, {"slot": 4, "time": "10:00"}],
        "label": "parcel p-7 slot 3", "literal": 5,
        "nested": ["saga-s1-book", {"k": "12"}],
    }


def test_a_missing_value_renders_as_null_and_as_empty_text():
    assert template.render({"a": "{{ context.nope }}", "b": "x{{ context.nope }}y"}, DATA) == {
        "a": None, "b": "xy"}


@pytest.mark.parametrize("bad, message", [
    ("{{ context.[ }}", "bad expression"),
    ("{{ contxt.id }}", "reads contxt"),
    ("{{ }}", "empty expression"),
    ("{{ length(response.items) }}", "reads response"),
])
def test_template_problems_name_syntax_errors_and_unknown_roots(bad, message):
    ((where, problem),) = template.problems({"x": [bad]}, contract.REQUEST_ROOTS)
    assert where == ("x", 0) and message in problem


def test_expressions_inside_projections_read_the_items_not_the_root():
    assert template.problems("{{ context.slots[?id > `3`].{slot: id} }}") == []


# -- conventions and answers --------------------------------------------------------------

def test_conventions_per_kind_need_no_declaration():
    http = contract.resolve("shipping", "flask", "book_slot", None)
    assert (http.method, http.path, http.declared) == ("POST", "/saga/book_slot", False)
    rpc = contract.resolve("billing", "nameko", "hold", None)
    assert rpc.method == "hold" and rpc.request is None
    grpc = contract.resolve("stock", "grpc", "put_aside", None)
    assert grpc.method == "PutAside"


def test_a_declaration_overrides_the_convention():
    spec = contract.resolve("shipping", "fastapi", "book", {
        "method": "put", "path": "/slots/{{ context.slot }}", "refused": [410]})
    assert (spec.method, spec.path, spec.refused, spec.declared) == (
        "PUT", "/slots/{{ context.slot }}", ("410",), True)
    assert contract.ActionSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("status, verdict", [
    (200, "ok"), (201, "ok"), (204, "ok"), (409, "refused"), (402, "refused"),
    (404, "refused"), (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
    (302, "refused"),
])
def test_http_answers_by_default(status, verdict):
    assert contract.outcome_http(contract.resolve("s", "flask", "a", None), status) == verdict


def test_declared_http_codes_win_over_the_defaults():
    spec = contract.resolve("s", "fastapi", "a", {"refused": ["5xx"], "retry": [409]})
    assert contract.outcome_http(spec, 503) == "refused"
    assert contract.outcome_http(spec, 409) == "retry"


def test_nameko_and_grpc_refusals():
    rpc = contract.resolve("s", "nameko", "a", {"refused": ["OutOfSlots"]})
    assert contract.refused_nameko(rpc, "OutOfSlots")
    assert contract.refused_nameko(rpc, "SagaRefused")  # the convention's own type
    assert not contract.refused_nameko(rpc, "ConnectionError")
    grpc = contract.resolve("s", "grpc", "a", {"retry": ["FAILED_PRECONDITION"],
                                                "refused": ["ABORTED"]})
    assert not contract.refused_grpc(grpc, "FAILED_PRECONDITION")
    assert contract.refused_grpc(grpc, "ABORTED") and contract.refused_grpc(grpc, "NOT_FOUND")
    assert not contract.refused_grpc(grpc, "UNAVAILABLE")


# -- input --------------------------------------------------------------------------------

DECLARED = {"parcel": {"type": "string"}, "weight": {"type": "number", "required": False},
            "express": {"type": "boolean", "default": False}}


def test_input_pairs_parse_json_where_they_can():
    assert inputs.parse_pairs(["a=1", "b=x", 'c=[1, {"d": 2}]', "e=", "f=a=b", "g=true"]) == {
        "a": 1, "b": "x", "c": [1, {"d": 2}], "e": "", "f": "a=b", "g": True}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        inputs.parse_pairs(["novalue"])


def test_declared_input_fills_defaults_and_refuses_everything_wrong_at_once():
    assert inputs.check("delivery", DECLARED, {"parcel": "p", "weight": 3}) == {
        "parcel": "p", "weight": 3, "express": False}
    with pytest.raises(UsageError) as info:
        inputs.check("delivery", DECLARED, {"weight": "heavy", "parcle": "p", "express": 1})
    message = info.value.message
    assert "missing parcel (string)" in message
    assert "weight: expected a number, found string" in message
    assert "express: expected a boolean, found integer" in message
    assert "unknown input 'parcle' (did you mean 'parcel'?)" in message
    assert info.value.exit_code == 2


def test_undeclared_input_takes_any_mapping():
    assert inputs.check("free", {}, {"anything": [1]}) == {"anything": [1]}


def test_input_documents_must_be_mappings():
    assert inputs.parse_document('{"a": 1}', "f.json") == {"a": 1}
    assert inputs.parse_document("a: 1\nb: [x]\n", "f.yaml") == {"a": 1, "b": ["x"]}
    with pytest.raises(UsageError, match="expected a mapping"):
        inputs.parse_document("[1, 2]", "f.json")


# -- shop.yaml ----------------------------------------------------------------------------

SHOP = """\
project: parcels
services:
  shipping:
    kind: fastapi
    port: 8101
    actions:
      book_slot:
        method: {method}
        path: {path}
        request: {{parcel: "{{{{ input.parcel }}}}"}}
        refused: [{refused}]
  labels:
    kind: grpc
    port: 50061
    actions:
      print:
        method: {grpc_method}
        retry: [{grpc_code}]
  mailer:
    kind: nameko
    port: 8102
sagas:
  delivery:
    input:
      parcel: string
    steps:
      - {{name: book, call: shipping.book_slot, compensate: shipping.free_slot}}
      - {{name: label, call: labels.print}}
      - {{name: notify, call: mailer.send}}
"""
GOOD = {"method": "POST", "path": "/slots", "refused": "409", "grpc_method": "Labels/Print",
        "grpc_code": "UNAVAILABLE"}


def load(tmp_path: Path, **changes):
    for name in ("shipping", "labels", "mailer"):
        (tmp_path / "services" / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop.yaml").write_text(SHOP.format(**{**GOOD, **changes}))
    return load_config("shop.yaml" if Path.cwd() == tmp_path else tmp_path / "shop.yaml", {})


def test_a_valid_contract_freezes_into_the_saga_definition(tmp_path):
    config = load(tmp_path)
    definition = snapshot(config, "delivery")
    assert definition["input"]["parcel"]["type"] == "string"
    specs = {call: contract.ActionSpec.from_dict(data)
             for call, data in definition["actions"].items()}
    book = specs["shipping.book_slot"]
    assert (book.method, book.path, book.declared) == ("POST", "/slots", True)
    free = specs["shipping.free_slot"]
    assert (free.path, free.declared) == ("/saga/free_slot", False)
    assert specs["mailer.send"].kind == "nameko"
    assert specs["labels.print"].retry == ("UNAVAILABLE",)
    # Defaults are left out of the frozen copy: every saga's log row carries it.
    assert "declared" not in definition["actions"]["shipping.free_slot"]
    assert "request" not in definition["actions"]["mailer.send"]


@pytest.mark.parametrize("changes, expected", [
    ({"method": "FETCH"}, "shop.yaml:8:9: services.shipping.actions.book_slot.method: "
                          "expected an HTTP method"),
    ({"path": "slots"}, "shop.yaml:9:9: services.shipping.actions.book_slot.path: "
                        "expected a URL path starting with '/'"),
    ({"refused": "'40x'"}, "shop.yaml:11:19: services.shipping.actions.book_slot.refused[0]: "
                           "expected an HTTP status like 409 or '4xx'"),
    ({"grpc_method": "'Labels/Print/Now'"}, "shop.yaml:17:9: services.labels.actions.print"
                                            ".method: expected 'package.Service/Method'"),
    ({"grpc_code": "UNAVAILBLE"}, "shop.yaml:18:17: services.labels.actions.print.retry[0]: "
                                  "expected a gRPC status code name, found 'UNAVAILBLE'"),
])
def test_bad_declarations_are_reported_where_they_are_written(tmp_path, changes, expected,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigInvalid) as info:
        load(tmp_path, **changes)
    assert any(line.startswith(expected) for line in str(info.value).splitlines()), str(
        info.value)


def test_a_misspelt_expression_root_is_reported_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("shipping",):
        (tmp_path / "services" / name).mkdir(parents=True)
    (tmp_path / "shop.yaml").write_text(textwrap.dedent("""\
        project: parcels
        services:
          shipping:
            kind: flask
            port: 8101
            actions:
              book_slot:
                request: {parcel: "{{ inptu.parcel }}"}
                result: {slot: "{{ response.slot_id }}"}
                pathh: /x
        """))
    with pytest.raises(ConfigInvalid) as info:
        load_config("shop.yaml", {})
    text = str(info.value)
    assert "shop.yaml:8:19: services.shipping.actions.book_slot.request.parcel: " \
           "{{ inptu.parcel }} reads inptu" in text
    assert "shop.yaml:10:9: services.shipping.actions.book_slot.pathh" in text
    assert "did you mean 'path'?" in text


def test_near_miss_of_a_declared_action(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("shipping", "labels", "mailer"):
        (tmp_path / "services" / name).mkdir(parents=True)
    text = SHOP.format(**GOOD).replace("call: shipping.book_slot,", "call: shipping.book_slt,")
    (tmp_path / "shop.yaml").write_text(text)
    with pytest.raises(ConfigInvalid) as info:
        load_config("shop.yaml", {})
    (problem,) = info.value.problems
    assert problem.location() == "shop.yaml:27:22"
    assert problem.message == ("shipping declares no action 'book_slt' (its convention would "
                               "be used), but declares 'book_slot'")
    assert problem.hint == "did you mean 'shipping.book_slot'?"
    # An action far from every declared one takes the convention without complaint.
    (tmp_path / "shop.yaml").write_text(text.replace("book_slt", "weigh"))
    assert load_config("shop.yaml", {}).sagas["delivery"].steps[0].action == "weigh"

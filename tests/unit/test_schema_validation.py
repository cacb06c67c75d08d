"""Validating params against a declared schema (app/schemas/validation.py): pointers, errors, and no input that
can stall a worker."""

import re
import threading
import time
import tracemalloc

import pytest

from app.schemas import budget
from app.schemas.keywords import short
from app.schemas.rules import check_schema
from app.schemas.validation import (
    MAX_REPORTED_ERRORS,
    MAX_STEPS,
    canonical,
    compile_schema,
    escape_token,
    params_errors,
    pointer,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "minimum": 5, "maximum": 35},
        "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}},
                                              "required": ["x"]}},
        "a/b": {"type": "string"},
        "m~n": {"type": "string"},
        "mode": {"enum": ["eco", "comfort"]},
        "tags": {"type": "array", "uniqueItems": True},
        "step": {"multipleOf": 0.5},
        "label": {"type": "string", "pattern": "^(a+)+$"},
        "unit": {"type": "string"},
        "labels": {"type": "object", "patternProperties": {"^(a+)+$": {"type": "string"}}},
    },
    "dependentRequired": {"unit": ["value"]},
    "required": ["value"],
    "additionalProperties": False,
}


def errors_of(params, prefix="/params"):
    return params_errors(compile_schema(SCHEMA), params, prefix)[0]


def test_valid_params_give_no_errors():
    params = {"value": 21, "points": [{"x": 1}], "mode": "eco"}
    assert params_errors(compile_schema(SCHEMA), params, "/params") == ([], 0)


@pytest.mark.parametrize("token, escaped", [("a/b", "a~1b"), ("m~n", "m~0n"), ("~/", "~0~1"), ("~1", "~01"), (2, "2"),
                                            ("", "")])
def test_reference_tokens_are_escaped_per_rfc_6901(token, escaped):
    assert escape_token(token) == escaped
    assert pointer("/params", ["x", token]) == "/params/x/" + escaped


def test_pointers_reach_into_nested_objects_and_arrays():
    errors = errors_of({"value": 21, "points": [{"x": 1}, {"x": 2}, {"x": "3"}, {}]})
    assert [(e["pointer"], e["keyword"]) for e in errors] == [
        ("/params/points/2/x", "type"), ("/params/points/3/x", "required")]


def test_keys_needing_escapes_are_escaped_in_pointers():
    errors = errors_of({"value": 21, "a/b": 1, "m~n": 2})
    assert [e["pointer"] for e in errors] == ["/params/a~1b", "/params/m~0n"]


def test_missing_and_unexpected_members_are_named_one_by_one():
    errors = errors_of({"unit": "C", "extra": 1, "other/one": 2})
    assert [(e["pointer"], e["keyword"]) for e in errors] == [
        ("/params/extra", "additionalProperties"),
        ("/params/other~1one", "additionalProperties"),
        ("/params/value", "dependentRequired"),
        ("/params/value", "required"),
    ]
    assert "extra" in errors[0]["message"]


def test_the_prefix_says_where_the_params_are_in_the_body():
    assert errors_of({}, "/payload/params")[0]["pointer"] == "/payload/params/value"
    assert errors_of({}, "")[0]["pointer"] == "/value"
    assert errors_of([], "")[0] == {"pointer": "", "message": "[] is not of type 'object'", "keyword": "type"}


def test_errors_are_sorted_by_pointer_and_capped():
    validator = compile_schema({"type": "object", "properties": {"v": {"type": "array", "items": {"type": "string"}}}})
    errors, found = params_errors(validator, {"v": list(range(200))}, "/params")
    assert found == 200 and len(errors) == MAX_REPORTED_ERRORS
    pointers = [e["pointer"] for e in errors]
    assert pointers == sorted(pointers)
    assert set(e["keyword"] for e in errors) == {"type"}


def test_messages_quoting_huge_values_are_shortened():
    [error] = errors_of({"value": "x" * 60_000})
    assert error["pointer"] == "/params/value" and len(error["message"]) <= 300


def test_a_false_subschema_reports_keyword_false_at_its_place():
    """jsonschema itself would report a `false` subschema at the parent (`/params`)."""
    validator = compile_schema({"type": "object", "properties": {"gone": False, "pair": {
        "type": "array", "prefixItems": [{"type": "integer"}], "items": False}}, "$defs": {"no": False}})
    errors, _ = params_errors(validator, {"gone": 1, "pair": [1, 2]}, "/params")
    assert [(e["pointer"], e["keyword"]) for e in errors] == [("/params/gone", "false"), ("/params/pair", "items")]
    assert params_errors(validator, {"pair": [True]}, "/params")[0][0]["pointer"] == "/params/pair/0"
    assert errors[0]["message"] == "No value is allowed here; got 1."


def run_with_deadline(work, seconds=20):
    """Run `work` in a thread; fail if it has not finished by the deadline (liveness, not a benchmark)."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome["value"]


def test_a_catastrophic_pattern_matches_in_linear_time():
    """`^(a+)+$` against 'aaa…a!' takes 2^n steps in a backtracking engine (Python's re would not finish 40
    characters in an hour); RE2 answers at once, for values and for property names."""
    hostile = "a" * 40 + "!"
    assert re.compile("^(a+)+$")  # what jsonschema would have used
    errors = run_with_deadline(lambda: errors_of({"value": 6, "label": hostile * 1000, "labels": {hostile: 1}}))
    assert [(e["pointer"], e["keyword"]) for e in errors] == [("/params/label", "pattern")]
    errors = run_with_deadline(lambda: errors_of({"value": 6, "labels": {"a" * 30: 1}}))
    assert [(e["pointer"], e["keyword"]) for e in errors] == [("/params/labels/" + "a" * 30, "type")]


def test_unique_items_is_linear_and_keeps_json_schema_equality():
    distinct = [{"n": i, "s": str(i)} for i in range(20_000)]
    assert run_with_deadline(lambda: errors_of({"value": 6, "tags": distinct})) == []
    assert errors_of({"value": 6, "tags": [1, 1.0]})[0]["keyword"] == "uniqueItems"
    assert errors_of({"value": 6, "tags": [{"a": 1, "b": [2]}, {"b": [2], "a": 1}]})[0]["keyword"] == "uniqueItems"
    assert errors_of({"value": 6, "tags": [1, True, "1", [1], {"1": 1}, None, 0, False]}) == []
    assert canonical(1) == canonical(1.0) and canonical(True) != canonical(1)


def test_multiple_of_handles_integers_too_big_for_floats():
    """jsonschema divides as floats and raises OverflowError for such integers; here they are exact."""
    assert errors_of({"value": 6, "step": 10 ** 400}) == []
    assert errors_of({"value": 6, "step": 0.3})[0]["keyword"] == "multipleOf"
    validator = compile_schema({"type": "object", "properties": {"n": {"multipleOf": 0.75}}})
    assert params_errors(validator, {"n": 3 * 10 ** 400}, "")[0] == []
    assert params_errors(validator, {"n": 10 ** 400 + 1}, "")[0][0]["keyword"] == "multipleOf"


@pytest.mark.parametrize("items", [
    {"anyOf": [{"required": [f"k{i}"]} for i in range(700)]},  # 700 errors built and discarded per item
    {"allOf": [{}] * 1000},  # 1,000 subschemas entered per item, none with a keyword
])
def test_a_costly_combination_of_schema_and_params_is_cut_off_by_the_step_budget(items):
    """Without the budget, the anyOf case takes ~45 s per 1,000 items (minutes for a 64 KB body)."""
    validator = compile_schema({"type": "object", "properties": {"v": {"type": "array", "items": items}}})
    errors, found = run_with_deadline(lambda: params_errors(validator, {"v": [{}] * 30_000}, "/params"))
    assert found == 1 and errors[0]["pointer"] == "/params" and errors[0]["keyword"] == "maxSteps"
    assert str(MAX_STEPS) in errors[0]["message"]


def test_large_but_ordinary_params_fit_the_budget():
    validator = compile_schema({"type": "object", "properties": {"points": {"type": "array", "items": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"], "additionalProperties": False}}}})
    assert params_errors(validator, {"points": [{"x": i, "y": -i} for i in range(2_700)]}, "/params") == ([], 0)
    samples = compile_schema({"type": "object", "properties": {"v": {"type": "array", "items": {"type": "number"}}}})
    assert params_errors(samples, {"v": [0.5] * 30_000}, "/params") == ([], 0)


# --- schema bombs: schemas every declaration limit allows, with bodies under 64 KB -------------------------
# Each took seconds to minutes of CPU before the keywords were re-implemented (figures in docs/device-types.md).

NUMBERS = [1] * 30_000  # 60 KB of JSON


def within_cpu(work, seconds=1.0):
    """Run `work` on this thread and fail unless it used less than `seconds` of CPU (thread time: a busy machine
    does not make it fail); a liveness deadline guards against a hang."""
    def measured():
        started = time.thread_time()
        result = work()
        return result, time.thread_time() - started

    result, used = run_with_deadline(measured, seconds=120)
    assert used < seconds, f"used {used:.2f} s of CPU"
    return result


def bomb_errors(schema, params):
    check_schema(schema)  # declarable
    validator = compile_schema(schema)
    return within_cpu(lambda: params_errors(validator, params, "/params"))


def test_unevaluated_items_next_to_items_is_linear():
    """jsonschema tested each index for membership in a list of evaluated indexes: quadratic (~4.5 s of CPU)."""
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"},
                                                     "unevaluatedItems": False}}}
    assert bomb_errors(schema, {"a": NUMBERS}) == ([], 0)
    assert bomb_errors(schema, {"a": [1, "x"]})[0][0]["pointer"] == "/params/a/1"


def test_six_hundred_pattern_properties_match_as_one_set():
    """600 patterns × 5,500 member names were 3.3 million separate searches (~7 s of CPU)."""
    schema = {"type": "object", "properties": {"a": {"type": "object", "patternProperties": {
        f"^p{i}_": {"minimum": 0} for i in range(600)}, "additionalProperties": {"type": "integer"}}}}
    members = {f"k{i}": 1 for i in range(5_500)}
    assert bomb_errors(schema, {"a": members}) == ([], 0)
    errors, _ = bomb_errors(schema, {"a": {**members, "p7_x": -7, "k1": "one"}})
    assert [(e["pointer"], e["keyword"]) for e in errors] == [("/params/a/k1", "type"), ("/params/a/p7_x", "minimum")]


def test_all_of_references_to_unevaluated_items_stop_at_the_budget():
    """Every branch of the `allOf` evaluates every item again (~5 s of CPU, 44 s of wall time on a busy machine)."""
    schema = {"type": "object", "$defs": {"u": {"unevaluatedItems": {"type": "number"}}},
              "properties": {"a": {"allOf": [{"$ref": "#/$defs/u"}] * 600}}}
    errors, found = bomb_errors(schema, {"a": NUMBERS})
    assert found == 1 and errors[0]["pointer"] == "/params" and errors[0]["keyword"] in ("maxSteps", "maxTime")


def test_any_of_errors_never_quote_the_whole_instance():
    """Each failing branch quoted the 60 KB array in its message and anyOf kept them all: ~65 MB per request."""
    schema = {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}] * 700}}}
    tracemalloc.start()
    try:
        errors, _ = bomb_errors(schema, {"a": NUMBERS})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(e["pointer"], e["keyword"]) for e in errors] == [("/params/a", "anyOf")]
    assert len(errors[0]["message"]) <= 300 and errors[0]["message"].startswith("[1, 1, 1")
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB"


def test_messages_quote_a_bounded_prefix_of_any_value():
    assert short([]) == "[]" and short({"a": [1, "x"]}) == "{'a': [1, 'x']}" and short("x" * 10) == repr("x" * 10)
    assert len(short(list(range(100_000)))) == 80 and short(list(range(100_000))).endswith("...")
    assert len(short("y" * 100_000)) == 80
    nested = []
    for _ in range(10_000):
        nested = [nested]
    assert short(nested) == "[" * 77 + "..."


def test_a_check_stops_at_its_cpu_time_budget(monkeypatch):
    """Work that no step accounts for is stopped by the CPU-time backstop (422 maxTime, not a stalled worker)."""
    monkeypatch.setattr(budget, "MAX_CPU_SECONDS", 0.05)
    slow = compile_schema({"type": "object", "properties": {"v": {"type": "array", "items": {"type": "number"}}}})
    errors, found = params_errors(slow, {"v": [0.5] * 30_000}, "/params")
    assert found == 1 and errors == [{"pointer": "/params", "keyword": "maxTime", "message": errors[0]["message"]}]
    assert "ms of CPU time" in errors[0]["message"]

"""Which command schemas a device type may declare (app/schemas/rules.py): hostile ones are refused, and fast."""

import json
import threading
import time

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from app.schemas.meta import meta_problem
from app.schemas.rules import (
    MAX_ANNOTATION_SCOPE,
    MAX_EXPANDED_NODES,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    SchemaProblem,
    check_schema,
)

SET_TEMPERATURE = {
    "type": "object",
    "properties": {"value": {"type": "number", "minimum": 5, "maximum": 35}},
    "required": ["value"],
    "additionalProperties": False,
}


def refusal(schema) -> SchemaProblem:
    with pytest.raises(SchemaProblem) as caught:
        check_schema(schema)
    return caught.value


def nested(levels: int) -> dict:
    schema = {"type": "integer"}
    for _ in range(levels - 1):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("schema", [
    SET_TEMPERATURE,
    {"type": "object"},
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    {"type": "object", "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
     "properties": {"points": {"type": "array", "items": {"$ref": "#/$defs/point"}}}},
    {"type": "object", "$defs": {"a b": {"type": "string"}, "c/d": {"type": "string"}},
     "properties": {"x": {"$ref": "#/$defs/a%20b"}, "y": {"$ref": "#/$defs/c~1d"}}},
    # Catastrophic for a backtracking engine, harmless for RE2: accepted (matching it is tested elsewhere).
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}},
    {"type": "object", "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "unevaluatedProperties": False, "allOf": [{"properties": {"a": {}}}]},
    # unevaluatedProperties matches patternProperties with the same RE2 Set as validation does.
    {"type": "object", "patternProperties": {"^a": {}}, "properties": {"b": {"unevaluatedProperties": False}}},
    nested(MAX_SCHEMA_DEPTH),
])
def test_reasonable_schemas_are_accepted(schema):
    check_schema(schema)


@pytest.mark.parametrize("schema, where, words", [
    ({"type": "array"}, "", "root of the schema"),
    (True, "", "root of the schema"),
    ({"properties": {}}, "", "root of the schema"),
    ({"type": ["object", "null"]}, "", "root of the schema"),
    ({"type": "object", "minimum": "five"}, "/minimum", "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"type": "integr"}}}, "/properties/a/type", "not a valid JSON Schema"),
    ({"type": "object", "required": "a"}, "/required", "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"pattern": "("}}}, "/properties/a/pattern", "not a valid JSON Schema"),
    ({"type": "object", "$ref": "https://example.com/schema.json"}, "/$ref", "leaves the document"),
    ({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}, "/properties/a/$ref", "leaves the document"),
    ({"type": "object", "$ref": "#/$defs/missing"}, "/$ref", "does not resolve"),
    ({"type": "object", "$id": "https://example.com/s"}, "", "'$id' is not supported"),
    ({"type": "object", "properties": {"a": {"$anchor": "a"}}}, "/properties/a", "'$anchor' is not supported"),
    ({"type": "object", "$dynamicRef": "#meta"}, "", "'$dynamicRef' is not supported"),
    ({"type": "object", "properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}},
     "/properties/a", "'$schema' may only"),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, "", "'$schema' may only"),
    ({"type": "object", "properties": {"a": {"$ref": "#"}}}, "/properties/a/$ref", "recursive"),
    ({"type": "object", "$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}}}},
      "properties": {"list": {"$ref": "#/$defs/n"}}}, "/properties/list/$ref/properties/next/$ref", "recursive"),
    ({"type": "object", "enum": [{"a": 1}], "properties": {"x": {"$ref": "#/enum/0/a"}}}, "/properties/x/$ref",
     "not a schema"),
    # A $ref into a place the meta-schema does not cover is checked like any subschema.
    ({"type": "object", "x-ext": {"type": 5}, "$ref": "#/x-ext"}, "/x-ext/type", "not a valid JSON Schema"),
    ({"type": "object", "x-ext": {"$ref": "https://evil.example/"}, "$ref": "#/x-ext"}, "/x-ext/$ref",
     "leaves the document"),
    ({"type": "object", "properties": {"s": {"pattern": "(a)\\1"}}}, "/properties/s/pattern", "RE2"),
    ({"type": "object", "properties": {"s": {"pattern": "^(?=a)a$"}}}, "/properties/s/pattern", "RE2"),
    ({"type": "object", "patternProperties": {"(?<!x)y": {}}}, "/patternProperties/(?<!x)y", "RE2"),
    ({"type": "object", "properties": {"s": {"pattern": "(a{1000}){1000}"}}}, "/properties/s/pattern", "RE2"),
])
def test_unacceptable_schemas_are_refused_with_the_place_and_the_problem(schema, where, words):
    problem = refusal(schema)
    assert problem.at == where
    assert words in problem.problem


def test_size_is_bounded_in_bytes():
    schema = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    assert f"at most {MAX_SCHEMA_BYTES}" in refusal(schema).problem


def test_nesting_is_bounded_even_through_references():
    assert "deeper than" in refusal(nested(MAX_SCHEMA_DEPTH + 1)).problem
    chain = {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(200)}
    chain["c200"] = {"type": "string"}
    problem = refusal({"type": "object", "$defs": chain, "properties": {"a": {"$ref": "#/$defs/c0"}}})
    assert "deeper than" in problem.problem and "through '$ref'" in problem.problem


def test_references_that_multiply_the_work_are_bounded():
    """Three references per level double... triple the evaluated schema at every level: 3^7 > MAX_EXPANDED_NODES
    subschemas from a document of a few hundred bytes."""
    definitions = {"d0": {"type": "string"}}
    for level in range(1, 8):
        definitions[f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level - 1}"}] * 3}
    schema = {"type": "object", "$defs": definitions, "properties": {"x": {"$ref": "#/$defs/d7"}}}
    assert len(json.dumps(schema)) < 1000
    problem = refusal(schema)
    assert str(MAX_EXPANDED_NODES) in problem.problem or "deeper than" in problem.problem
    wide = {"type": "object", "$defs": {"d0": {"type": "string"}, **{
        f"d{level}": {"allOf": [{"$ref": f"#/$defs/d{level - 1}"}] * 12} for level in range(1, 4)}},
        "properties": {"x": {"$ref": "#/$defs/d3"}}}
    assert str(MAX_EXPANDED_NODES) in refusal(wide).problem


def test_the_largest_allowed_schemas_are_checked_without_stalling():
    """A hostile admin cannot stall a worker at declaration: the biggest schemas the limits allow are checked
    (and refused or accepted) promptly. The deadline is generous; this is a liveness check, not a benchmark."""
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 9} for i in range(420)}}
    assert MAX_SCHEMA_BYTES - 1500 < len(json.dumps(wide, separators=(",", ":"))) <= MAX_SCHEMA_BYTES
    hostile = [wide, nested(MAX_SCHEMA_DEPTH), {"type": "object", "enum": ["a" * 60] * 250}]
    finished = threading.Event()

    def check_all():
        for schema in hostile:
            try:
                check_schema(schema)
            except SchemaProblem:
                pass
        finished.set()

    threading.Thread(target=check_all, daemon=True).start()
    assert finished.wait(30), "checking the largest schemas took longer than 30 s"


def cpu_seconds(work) -> float:
    started = time.thread_time()
    work()
    return time.thread_time() - started


def test_declaring_seven_hundred_references_takes_little_cpu():
    """The meta-schema check cost about a millisecond per subschema (~0.5 s of CPU here, ~1.4 s of wall time on a
    busy machine, for 700 `$ref`s); it is shallow and linear now (~0.04 s)."""
    schema = json.loads(json.dumps({"type": "object", "$defs": {"d": {"type": "integer", "minimum": 0}},
                                    "properties": {"a": {"allOf": [{"$ref": "#/$defs/d"} for _ in range(700)]}}}))
    assert len(json.dumps(schema, separators=(",", ":"))) <= MAX_SCHEMA_BYTES
    assert cpu_seconds(lambda: check_schema(schema)) < 0.2


def test_unevaluated_keywords_that_would_recheck_too_many_branches_are_refused():
    """`unevaluatedItems` next to an `allOf` of 200 references re-checks the whole array against every branch on
    every request: refused when declared, naming the keyword."""
    schema = {"type": "object", "$defs": {"u": {"items": {"type": "number"}}},
              "properties": {"a": {"allOf": [{"$ref": "#/$defs/u"}] * 200, "unevaluatedItems": False}}}
    problem = refusal(schema)
    assert problem.at == "/properties/a/unevaluatedItems" and str(MAX_ANNOTATION_SCOPE) in problem.problem
    few = {"type": "object", "$defs": {"u": {"prefixItems": [{"type": "number"}]}},
           "properties": {"a": {"allOf": [{"$ref": "#/$defs/u"}] * 20, "unevaluatedProperties": False}}}
    check_schema(few)


@pytest.mark.parametrize("schema", [
    {"type": "object"}, {"type": "object", "properties": {"a": {"type": "integr"}}},
    {"type": "object", "properties": {"a": {"minimum": "x"}}}, {"type": "object", "allOf": []},
    {"type": "object", "allOf": [{"required": "a"}]}, {"type": "object", "$defs": {"a": {"enum": 5}}},
    {"type": "object", "patternProperties": {"(": {}}}, {"type": "object", "dependentRequired": {"a": [1]}},
    {"type": "object", "properties": {"a": {"items": {"prefixItems": [{"maxLength": -1}]}}}},
    {"type": "object", "properties": {"a": {"$ref": 7}}}, {"type": "object", "dependencies": {"a": 5}},
    {"type": "object", "contentSchema": {"type": 1}}, {"type": "object", "not": {"uniqueItems": "yes"}},
])
def test_the_shallow_meta_check_agrees_with_the_full_meta_schema(schema):
    full = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=FormatChecker(formats=("regex",)))
    assert (meta_problem(schema, set()) is None) == full.is_valid(schema)

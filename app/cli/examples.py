"""Example device types that `uaip-hub simulate --example NAME` declares and plays (docs/device-types.md).

An example is a type declaration (the PUT body) and a behaviour: how a simulated device of that type answers
each command. Results always match the command's declared result schema (tests/integration check it).

An example may also play device state (docs/state.md): `reported(state)` is what the device reports about itself
(matching the declared properties), `tick(state)` moves it on between reports (the room warms towards the
set-point), and `apply_desired(state, desired)` honours the desired values an agent set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# behaviour(state of this device, command, params) → ("completed", result, None) or ("failed", None, error)
Behaviour = Callable[[dict[str, Any], str, dict[str, Any]], tuple[str, Any, str | None]]

CELSIUS = {"type": "number", "description": "Degrees Celsius."}


@dataclasses.dataclass(frozen=True)
class Example:
    device_type: str
    declaration: dict[str, Any]
    behaviour: Behaviour
    initial_state: dict[str, Any]
    reported: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    tick: Callable[[dict[str, Any]], None] | None = None
    apply_desired: Callable[[dict[str, Any], dict[str, Any]], None] | None = None


def _thermostat(state: dict[str, Any], command: str, params: dict[str, Any]) -> tuple[str, Any, str | None]:
    if command == "set_temperature":
        state["target"] = float(params["value"])
        return "completed", {"target": state["target"], "temperature": state["temperature"]}, None
    if command == "read":
        # The room moves halfway towards the set-point at every reading.
        state["temperature"] = round((state["temperature"] + state["target"]) / 2, 1)
        heating = state["temperature"] < state["target"]
        return "completed", {"temperature": state["temperature"], "target": state["target"], "heating": heating}, None
    return "failed", None, f"a thermostat does not know the command {command!r}"


def _thermostat_reported(state: dict[str, Any]) -> dict[str, Any]:
    return {"temperature": state["temperature"], "target_temperature": state["target"],
            "heating": state["temperature"] < state["target"]}


def _thermostat_tick(state: dict[str, Any]) -> None:
    """Between reports the room moves halfway towards the set-point."""
    state["temperature"] = round((state["temperature"] + state["target"]) / 2, 1)


def _thermostat_desired(state: dict[str, Any], desired: dict[str, Any]) -> None:
    target = desired.get("target_temperature")
    if isinstance(target, (int, float)) and not isinstance(target, bool) and 5 <= target <= 35:
        state["target"] = float(target)


THERMOSTAT = Example(
    device_type="thermostat",
    declaration={
        "description": "A room thermostat (simulated by uaip-hub simulate --example thermostat).",
        "commands": {
            "set_temperature": {
                "description": "Set the target temperature.",
                "params": {
                    "type": "object",
                    "properties": {"value": {**CELSIUS, "minimum": 5, "maximum": 35}},
                    "required": ["value"],
                    "additionalProperties": False,
                },
                "result": {
                    "type": "object",
                    "properties": {"target": CELSIUS, "temperature": CELSIUS},
                    "required": ["target", "temperature"],
                    "additionalProperties": False,
                },
                "safe": False,
                "idempotent": True,
            },
            "read": {
                "description": "Read the room temperature, the target and whether it is heating.",
                "params": {"type": "object", "additionalProperties": False},
                "result": {
                    "type": "object",
                    "properties": {"temperature": CELSIUS, "target": CELSIUS, "heating": {"type": "boolean"}},
                    "required": ["temperature", "target", "heating"],
                    "additionalProperties": False,
                },
                "safe": True,
                "idempotent": True,
            },
        },
        "properties": {
            "temperature": {"description": "The measured room temperature.", "schema": CELSIUS, "unit": "celsius"},
            "target_temperature": {"description": "The set-point the thermostat heats to.",
                                   "schema": {**CELSIUS, "minimum": 5, "maximum": 35}, "writable": True,
                                   "unit": "celsius"},
            "heating": {"description": "Whether it is heating now.", "schema": {"type": "boolean"}},
        },
    },
    behaviour=_thermostat,
    initial_state={"temperature": 19.0, "target": 20.0},
    reported=_thermostat_reported,
    tick=_thermostat_tick,
    apply_desired=_thermostat_desired,
)

EXAMPLES = {example.device_type: example for example in (THERMOSTAT,)}

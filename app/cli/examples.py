"""Example device types that `uaip-hub simulate --example NAME` declares and plays (docs/device-types.md).

An example is a type declaration (the PUT body) and a behaviour: how a simulated device of that type answers
each command. Results always match the command's declared result schema (tests/integration check it).
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
    },
    behaviour=_thermostat,
    initial_state={"temperature": 19.0, "target": 20.0},
)

EXAMPLES = {example.device_type: example for example in (THERMOSTAT,)}

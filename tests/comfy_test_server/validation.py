"""``POST /prompt`` validation, following ``execution.validate_prompt`` of ComfyUI 0.3.64.

The control flow deliberately matches ComfyUI's (including where Python exceptions escape),
because clients depend on the resulting error *shapes*: e.g. a link to a missing node raises
``KeyError`` inside validation and surfaces as ``exception_during_validation``, and a
non-dict node value escapes as a plain-text HTTP 500.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from .nodes import VALIDATORS, NodeContext, NodeDefinitions

Prompt = dict[str, Any]
ValidationResult = tuple[bool, list[dict[str, Any]], str]


def is_link(obj: Any) -> bool:
    """``[node_id: str, output_index: int|float]``, as comfy_execution.graph_utils.is_link."""
    return (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], (int, float)) and not isinstance(obj[1], bool))


def get_input_info(defn: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any] | None]:
    """(input type, category, extra options) of one input of a definition."""
    for category in ("required", "optional", "hidden"):
        section = defn["input"].get(category) or {}
        if name in section:
            info = section[name]
            if category == "hidden":
                return info, category, {}
            return info[0], category, (info[1] if len(info) > 1 else {})
    return None, None, None


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    """Type compatibility incl. ``*`` and ``"A,B"`` unions (IO.__ne__ semantics)."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    if received_type == "*" or input_type == "*":
        return True
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    return len(received & wanted) > 0


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else module + "." + klass.__qualname__


class Validator:
    """Validates API-format prompts against the node definitions."""

    def __init__(self, defs: NodeDefinitions, ctx: NodeContext) -> None:
        self.defs = defs
        self.ctx = ctx

    def validate_inputs(self, prompt: Prompt, unique_id: str, validated: dict[str, ValidationResult],
                        defs_cache: dict[str, dict[str, Any]]) -> ValidationResult:
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        if class_type not in defs_cache:
            defs_cache[class_type] = self.defs.get(class_type)  # type: ignore[assignment]
        defn = defs_cache[class_type]
        valid_inputs = list(defn["input"].get("required", {})) + [
            k for k in defn["input"].get("optional", {}) if k not in defn["input"].get("required", {})]
        validator, validator_inputs = VALIDATORS.get(class_type, (None, []))

        errors: list[dict[str, Any]] = []
        valid = True
        for x in valid_inputs:
            input_type, input_category, extra_info = get_input_info(defn, x)
            assert extra_info is not None
            if x not in inputs:
                if input_category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": f"{x}", "extra_info": {"input_name": x}})
                continue

            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]  # KeyError for a missing node, like ComfyUI
                received_type = self.defs.return_types(o_class_type)[val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {"input_name": x, "input_config": info, "received_type": received_type,
                                       "linked_node": val}})
                    continue
                try:
                    r = self.validate_inputs(prompt, o_id, validated, defs_cache)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    typ, _, tb = sys.exc_info()
                    valid = False
                    validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info, "exception_message": str(ex),
                                       "exception_type": full_type_name(typ),  # type: ignore[arg-type]
                                       "traceback": traceback.format_tb(tb), "linked_node": val}}], o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    converter = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                        input_type if isinstance(input_type, str) else "")
                    if converter is not None:
                        val = converter(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                       "exception_message": str(ex)}})
                    continue

                if x not in validator_inputs:
                    if "min" in extra_info and val < extra_info["min"]:
                        errors.append({
                            "type": "value_smaller_than_min",
                            "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                        continue
                    if "max" in extra_info and val > extra_info["max"]:
                        errors.append({
                            "type": "value_bigger_than_max",
                            "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                        continue
                    if isinstance(input_type, list) and val not in input_type:
                        input_config: Any = info
                        if len(input_type) > 20:
                            list_info = f"(list of length {len(input_type)})"
                            input_config = None
                        else:
                            list_info = str(input_type)
                        errors.append({
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {"input_name": x, "input_config": input_config, "received_value": val}})
                        continue

        if validator is not None:
            # Linked values are not available at validation time (ComfyUI passes None).
            args = {k: (None if is_link(inputs[k]) else inputs[k]) for k in validator_inputs if k in inputs}
            r = validator(self.ctx, **args)
            if r is not True:
                for x in args:
                    details = f"{x}" + (f" - {r}" if r is not False else "")
                    errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": x}})

        ret: ValidationResult = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        validated[unique_id] = ret
        return ret

    def validate_prompt(self, prompt: Prompt, partial_execution_list: list[str] | None
                        ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        """Returns (valid, error, good_outputs, node_errors) exactly like ComfyUI."""
        outputs: list[str] = []
        for x in prompt:
            if "class_type" not in prompt[x]:  # TypeError for non-dict nodes -> HTTP 500, like ComfyUI
                return (False, {"type": "invalid_prompt",
                                "message": "Cannot execute because a node is missing the class_type property.",
                                "details": f"Node ID '#{x}'", "extra_info": {}}, [], {})
            class_type = prompt[x]["class_type"]
            if not isinstance(class_type, str) or class_type not in self.defs:
                return (False, {"type": "invalid_prompt",
                                "message": f"Cannot execute because node {class_type} does not exist.",
                                "details": f"Node ID '#{x}'", "extra_info": {}}, [], {})
            if self.defs.is_output(class_type) and (partial_execution_list is None or x in partial_execution_list):
                outputs.append(x)

        if not outputs:
            return (False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                            "extra_info": {}}, [], {})

        good_outputs: list[str] = []
        errors: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, Any] = {}
        validated: dict[str, ValidationResult] = {}
        defs_cache: dict[str, dict[str, Any]] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(prompt, o, validated, defs_cache)
            except Exception as ex:
                typ, _, tb = sys.exc_info()
                valid = False
                reasons = [{"type": "exception_during_validation", "message": "Exception when validating node",
                            "details": str(ex),
                            "extra_info": {"exception_type": full_type_name(typ),  # type: ignore[arg-type]
                                           "traceback": traceback.format_tb(tb)}}]
                validated[o] = (False, reasons, o)

            if valid is True:
                good_outputs.append(o)
                continue
            logging.error(f"Failed to validate prompt for output {o}:")
            for reason in reasons:
                logging.error(f"* (prompt): {reason['message']}: {reason['details']}")
            errors.append((o, reasons))
            for node_id, result in validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                        for reason in result[1]:
                            logging.error(f"* {prompt[node_id]['class_type']} {node_id}: "
                                          f"{reason['message']}: {reason['details']}")
                    node_errors[node_id]["dependent_outputs"].append(o)
            logging.error("Output will be ignored")

        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
            return (False, {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                            "details": details, "extra_info": {}}, [], node_errors)
        return (True, None, good_outputs, node_errors)

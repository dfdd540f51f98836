"""The compatibility check: would a new schema break consumers of the committed one?

Within a version only additive, optional changes are allowed. Breaking, for an event that
consumers already read: an event type removed, a field removed or renamed, a new required
field (or an optional one made required), a type changed, an enum value removed, or a
constraint tightened (a minimum raised, a maximum lowered, a pattern or format added or
changed, a closed set introduced). Adding an optional field, an enum value or an event
type is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convohub.contracts.schemas import resolve

LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
EXACT_CONSTRAINTS = ("pattern", "format", "const", "multipleOf")

Schema = dict[str, Any]


@dataclass(frozen=True, order=True)
class BreakingChange:
    """One change that breaks consumers of an event type, at a path inside its envelope."""

    event_type: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.event_type}: {self.path or '(envelope)'}: {self.reason}"


def compare_catalogues(
    committed: Mapping[str, Schema], current: Mapping[str, Schema]
) -> list[BreakingChange]:
    """Breaking changes from the committed schemas (by event type) to the current ones."""
    changes: list[BreakingChange] = []
    for event_type, old in committed.items():
        if event_type not in current:
            changes.append(BreakingChange(event_type, "", "event type removed"))
            continue
        changes.extend(breaking_changes(event_type, old, current[event_type]))
    return sorted(changes)


def breaking_changes(event_type: str, committed: Schema, current: Schema) -> list[BreakingChange]:
    """Breaking changes between two schemas of one event type, sorted by path."""
    comparison = _Comparison(event_type, committed, current)
    comparison.compare(committed, current, "")
    return sorted(comparison.changes)


class _Comparison:
    def __init__(self, event_type: str, old_root: Schema, new_root: Schema) -> None:
        self.event_type = event_type
        self.old_root = old_root
        self.new_root = new_root
        self.changes: list[BreakingChange] = []
        self._visited: set[tuple[int, int]] = set()

    def report(self, path: str, reason: str) -> None:
        self.changes.append(BreakingChange(self.event_type, path, reason))

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old_by_kind = self._branches_by_kind(self.old_root, old)
        new_by_kind = self._branches_by_kind(self.new_root, new)
        if set(old_by_kind) != set(new_by_kind) and "any" not in old_by_kind:
            self.report(
                path,
                f"type changed from {_kinds(old_by_kind)} to {_kinds(new_by_kind)}",
            )
            return
        for kind, old_branch in old_by_kind.items():
            new_branch = new_by_kind.get(kind)
            if new_branch is None:
                continue
            pair = (id(old_branch), id(new_branch))
            if pair in self._visited:
                continue
            self._visited.add(pair)
            self._compare_constraints(old_branch, new_branch, path)
            if kind == "object":
                self._compare_objects(old_branch, new_branch, path)
            elif kind == "array" and "items" in old_branch and "items" in new_branch:
                self.compare(old_branch["items"], new_branch["items"], f"{path}[]")

    def _compare_objects(self, old: Schema, new: Schema, path: str) -> None:
        old_props: Schema = old.get("properties", {})
        new_props: Schema = new.get("properties", {})
        old_required = set(old.get("required", []))
        for name in old_props:
            if name not in new_props:
                self.report(_join(path, name), "field removed (or renamed)")
        for name in new.get("required", []):
            if name not in old_required:
                reason = (
                    "optional field became required"
                    if name in old_props
                    else ("new required field")
                )
                self.report(_join(path, name), reason)
        for name, old_prop in old_props.items():
            if name in new_props:
                self.compare(old_prop, new_props[name], _join(path, name))
        old_extra = old.get("additionalProperties", True)
        if old_extra is not False and new.get("additionalProperties", True) is False:
            self.report(path, "unknown fields now rejected (additionalProperties: false)")

    def _compare_constraints(self, old: Schema, new: Schema, path: str) -> None:
        for key in LOWER_BOUNDS:
            if key in new and (key not in old or new[key] > old[key]):
                self.report(path, f"constraint tightened: {key} {old.get(key)} -> {new[key]}")
        for key in UPPER_BOUNDS:
            if key in new and (key not in old or new[key] < old[key]):
                self.report(path, f"constraint tightened: {key} {old.get(key)} -> {new[key]}")
        for key in EXACT_CONSTRAINTS:
            if key in new and new.get(key) != old.get(key):
                self.report(path, f"constraint tightened: {key} {old.get(key)!r} -> {new[key]!r}")
        if "enum" in new:
            if "enum" not in old:
                self.report(path, f"constraint tightened: now limited to {new['enum']}")
            else:
                removed = [value for value in old["enum"] if value not in new["enum"]]
                if removed:
                    self.report(path, f"enum value(s) removed: {removed}")

    def _branches_by_kind(self, root: Schema, node: Schema) -> dict[str, Schema]:
        """Map each JSON type the node allows to the (resolved) schema describing it."""
        node = resolve(root, node)
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            found: dict[str, Schema] = {}
            for branch in branches:
                for kind, schema in self._branches_by_kind(root, branch).items():
                    found.setdefault(kind, schema)
            return found
        return {kind: node for kind in _node_kinds(node)}


def _node_kinds(node: Schema) -> list[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return list(declared)
    if "properties" in node:
        return ["object"]
    values = node.get("enum", []) + ([node["const"]] if "const" in node else [])
    if values:
        return sorted({_json_kind(value) for value in values})
    return ["any"]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _kinds(by_kind: Mapping[str, Any]) -> str:
    return "|".join(sorted(by_kind))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

"""Lineage: follow an asset's recorded inputs back to the teacher version that started it all."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rd_pipeline.steps.context import teacher_versions_of
from rd_pipeline.store import Store

_KEY = re.compile(r"^(?P<asset>[a-z_]+)(?:\[(?P<benchmark>[a-z_0-9]+)\])?$")
# Tables a model asset fills besides its checkpoint, keyed by the column that holds its version.
RECORD_TABLES = {
    "sft_student": (("sft_validation", "sft_version"),),
    "rl_student": (("rl_validation", "rl_version"), ("rl_rollouts", "rl_version")),
}


@dataclass
class LineageNode:
    asset: str
    benchmark: str
    data_version: str
    run_id: str
    teacher_versions: list[str]
    recorded_at: Any = None
    inputs: list[LineageNode] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.benchmark}]" if self.benchmark else self.asset


def _record(store: Store, asset: str, benchmark: str, data_version: str | None) -> dict[str, Any] | None:
    match = {"asset": asset} | ({"data_version": data_version} if data_version else {})
    rows = store.read("asset_versions", benchmark=benchmark, order_by="recorded_at DESC", **match)
    return rows[0] if rows else None


def trace(
    store: Store, asset: str, benchmark: str = "", data_version: str | None = None, _depth: int = 0
) -> LineageNode | None:
    """The lineage tree of an asset partition (its latest version unless ``data_version`` is given)."""
    record = _record(store, asset, benchmark, data_version)
    if record is None or _depth > 20:
        return None
    node = LineageNode(
        asset,
        benchmark,
        record["data_version"],
        record["run_id"],
        teacher_versions_of(record),
        record["recorded_at"],
    )
    for key, ref in sorted(json.loads(record["upstream"] or "{}").items()):
        parsed = _KEY.match(key)
        if parsed is None or not isinstance(ref, dict):
            continue
        upstream_asset = parsed["asset"]
        candidates = [parsed["benchmark"]] if parsed["benchmark"] else [benchmark, ""]
        for candidate in dict.fromkeys(candidates):
            child = trace(store, upstream_asset, candidate, ref.get("data_version"), _depth + 1)
            if child is not None:
                node.inputs.append(child)
                break
    return node


def render(node: LineageNode) -> str:
    """The tree as indented text, each line with version, run and teacher version; a node already shown once is
    not expanded again."""
    lines: list[str] = []
    shown: set[tuple[str, str]] = set()

    def walk(current: LineageNode, prefix: str, last: bool, root: bool) -> None:
        teacher = f"  teacher {','.join(current.teacher_versions)}" if current.teacher_versions else ""
        text = f"{current.label}  version {current.data_version}  run {current.run_id[:8]}{teacher}"
        key = (current.label, current.data_version)
        repeated = key in shown and bool(current.inputs)
        shown.add(key)
        text += "  (inputs shown above)" if repeated else ""
        lines.append(text if root else f"{prefix}{'└─ ' if last else '├─ '}{text}")
        child_prefix = "" if root else prefix + ("   " if last else "│  ")
        for index, child in enumerate([] if repeated else current.inputs):
            walk(child, child_prefix, index == len(current.inputs) - 1, False)

    walk(node, "", True, True)
    return "\n".join(lines)


def teacher_versions(node: LineageNode) -> set[str]:
    """Every teacher version found in the tree."""
    found = set(node.teacher_versions)
    for child in node.inputs:
        found |= teacher_versions(child)
    return found


def recorded_tables(store: Store, node: LineageNode) -> list[str]:
    """Where the tables an asset version fills are, with how many rows each holds of that version, and the
    query that reads them (e.g. rl_student's validation curve and rollouts)."""
    lines = []
    for table, column in RECORD_TABLES.get(node.asset, ()):
        rows = len(store.read(table, **{column: node.data_version}))
        lines.append(
            f"{table}: {rows} rows of this version in {store.path} "
            f"(SELECT * FROM {table} WHERE {column} = '{node.data_version}')"
        )
    return lines

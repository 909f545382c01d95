"""Teacher versions of a trained model are a list in lineage and metadata; older comma-joined records still read."""

from __future__ import annotations

import json
from pathlib import Path

from rd_pipeline.steps.context import lineage_ref, teacher_versions_of
from rd_pipeline.steps.lineage import render, teacher_versions, trace
from rd_pipeline.store import Store


def test_teacher_versions_read_lists_and_old_comma_joined_strings():
    assert teacher_versions_of({"teacher_versions": ["b", "a"]}) == ["a", "b"]
    assert teacher_versions_of({"teacher_version": "b,a"}) == ["a", "b"]  # written before lists
    assert teacher_versions_of({"teacher_version": "t1"}) == ["t1"]
    assert teacher_versions_of({"teacher_version": ""}) == []
    assert teacher_versions_of({"teacher_version": None}) == []


def test_lineage_ref_carries_a_list():
    ref = lineage_ref({"data_version": "v", "run_id": "r", "teacher_version": "t2,t1"})
    assert ref == {"data_version": "v", "run_id": "r", "teacher_versions": ["t1", "t2"]}


def test_trace_reads_old_comma_joined_records(tmp_path: Path):
    store = Store(tmp_path / "rd.duckdb")
    base = {"benchmark": "", "run_id": "run-1", "recorded_at": None}
    store.append(
        "asset_versions",
        [
            {
                **base,
                "asset": "pseudo_labels",
                "benchmark": "gsm8k",
                "data_version": "p1",
                "teacher_version": "t1",
                "upstream": "{}",
            },
            {
                **base,
                "asset": "sft_student",
                "data_version": "s1",
                "teacher_version": "t1,t2",
                "upstream": json.dumps(
                    {
                        "pseudo_labels[gsm8k]": {
                            "data_version": "p1",
                            "run_id": "run-1",
                            "teacher_version": "t1",
                        }
                    }
                ),
            },
        ],
    )
    node = trace(store, "sft_student")
    assert node.teacher_versions == ["t1", "t2"]
    assert teacher_versions(node) == {"t1", "t2"}
    assert "teacher t1,t2" in render(node)

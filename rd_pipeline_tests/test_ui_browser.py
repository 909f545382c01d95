"""The Dagster UI in a real browser: the whole graph, its partitions, and one partition materialized from the UI.

Drives Debian's chromium through Playwright against `dagster dev` started on a free 127.0.0.1 port. Screenshots
go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from rd_pipeline.config import load_preset
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import dagster_home, materialize_graph
from rd_pipeline_tests.support.ui_server import UiServer, dagster_ui

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

CHROMIUM = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is missing: install Debian's package (`apt-get install -y chromium`)",
    ),
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
GRAPH_ASSETS = (
    "benchmark_prompts",
    "teacher",
    "teacher_responses",
    "pseudo_labels",
    "sft_student",
    "student_responses",
    "reward_labels",
    "reward_model",
    "rl_student",
    "eval_scores",
    "report",
)
PARTITION = "gsm8k"
UI_TIMEOUT_MS = 120_000
RUN_TIMEOUT_S = 300.0
# The webserver opens a "Join the Dagster community" dialog about a second after the first page load on localhost,
# unless the browser's storage says it was dismissed. Arriving while a menu is open, it closed the menu under a
# pending click, so the dismissal is stored before any page script runs.
DISMISS_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"
RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 50) { ... on Runs { results { runId status } } }
}
"""


@pytest.fixture()
def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UiServer]:
    """benchmark_prompts materialized for every partition in a fresh RD_HOME, and the UI serving it."""
    rd_home = tmp_path / "rd_home"
    monkeypatch.setenv("RD_HOME", str(rd_home))
    monkeypatch.setenv("RD_PRESET", "tiny")
    monkeypatch.setenv("DAGSTER_HOME", str(rd_home / "dagster"))
    monkeypatch.delenv("RD_CONFIG", raising=False)
    config = load_preset("tiny")
    results = materialize_graph(
        config, PipelineResource(preset="tiny"), ["benchmark_prompts"], log_level="WARNING"
    )
    assert results and all(result.success for result in results)
    ARTIFACTS.mkdir(exist_ok=True)
    with dagster_ui(
        rd_home, dagster_home(config), ARTIFACTS / "ui_server.log", env={"RD_PRESET": "tiny"}
    ) as server:
        yield server


def _ui_runs(server: UiServer) -> dict[str, str]:
    """Run id -> status for runs launched from the UI for PARTITION."""
    tags = [{"key": "dagster/from_ui", "value": "true"}, {"key": "dagster/partition", "value": PARTITION}]
    data = server.graphql(RUNS_QUERY, {"filter": {"tags": tags}})
    return {run["runId"]: run["status"] for run in data["runsOrError"]["results"]}


def _wait_for_new_run(server: UiServer, before: set[str]) -> tuple[str, str]:
    """Poll the webserver until a run not in `before` reaches a final status; return (run id, status)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    run_id, status = None, None
    while time.monotonic() < deadline:
        new = {rid: st for rid, st in _ui_runs(server).items() if rid not in before}
        assert len(new) <= 1, f"expected one run launched from the UI, got {new}"
        if new:
            ((run_id, status),) = new.items()
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return run_id, status
        time.sleep(2.0)
    raise AssertionError(f"run {run_id} still {status} after {RUN_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def _open_asset_graph(page, server: UiServer) -> None:
    """The global asset lineage with every group expanded, checked node by node."""
    page.goto(f"{server.url}/asset-groups")
    page.get_by_role("button", name=re.compile(r"Materialize all")).wait_for()
    page.wait_for_timeout(2_000)  # past the moment the community dialog would open
    community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    sync_api.expect(community).to_have_count(0)
    tree_toggle = page.get_by_role("button").filter(has=page.get_by_role("img", name="panel_show_right"))
    tree_toggle = tree_toggle.filter(has_not_text="Hide navigation")
    if tree_toggle.count() == 1:  # cosmetic: hide the asset tree so the graph gets the whole width
        tree_toggle.click()
    settings = page.get_by_role("button").filter(has=page.get_by_role("img", name="settings", exact=True))
    settings.filter(has_not_text="Settings").click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    nodes = page.locator("svg foreignObject [class*='assetName']")
    for name in GRAPH_ASSETS:
        sync_api.expect(nodes.filter(has_text=re.compile(rf"^{re.escape(name)}$"))).to_have_count(1)
    page.wait_for_timeout(1_000)  # let the layout settle before the screenshot
    page.screenshot(path=ARTIFACTS / "ui_asset_graph.png")


def _check_partitions(page, server: UiServer, benchmarks: list[str]) -> None:
    """benchmark_prompts' partitions page lists every benchmark, all materialized."""
    page.goto(f"{server.url}/assets/benchmark_prompts?view=partitions")
    sync_api.expect(page.get_by_text(f"Materialized ({len(benchmarks)})")).to_be_visible()
    for benchmark in benchmarks:
        sync_api.expect(page.get_by_text(benchmark, exact=True).first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "ui_partitions.png")


def _launch_one_partition(page) -> None:
    """Materialize… -> pick PARTITION in the partition selection -> Launch 1 run (on the partitions page)."""
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    sync_api.expect(dialog.get_by_text("Launch runs to materialize benchmark_prompts")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has=page.get_by_text(PARTITION, exact=True)).click()
    dialog.get_by_text("Launch runs to materialize benchmark_prompts").click()  # close the partition list
    dialog.get_by_role("button", name="Launch 1 run").click()
    sync_api.expect(page.get_by_text(re.compile(r"^Launched run "))).to_be_visible()


def test_ui_shows_graph_and_partitions_and_materializes_one_partition(ui: UiServer):
    benchmarks = load_preset("tiny").benchmark_names
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(DISMISS_COMMUNITY_DIALOG)
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            _open_asset_graph(page, ui)
            _check_partitions(page, ui, benchmarks)
            before = set(_ui_runs(ui))
            _launch_one_partition(page)
            run_id, status = _wait_for_new_run(ui, before)
            page.goto(f"{ui.url}/runs/{run_id}")
            sync_api.expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            sync_api.expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "ui_run_success.png")
        except Exception:
            page.screenshot(path=ARTIFACTS / "ui_failure.png")
            raise
        finally:
            browser.close()
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{ui.log_tail()}"
    records = (
        dg.DagsterInstance.get()
        .fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("benchmark_prompts"), asset_partitions=[PARTITION]),
            limit=1,
        )
        .records
    )
    assert records and records[0].run_id == run_id, "the UI run did not record the latest materialization"

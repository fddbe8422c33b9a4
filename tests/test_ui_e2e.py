"""The platform as its users see it: ``dagster dev`` (webserver and daemon), a full
materialization launched through the GraphQL API on the ``tiny`` preset, and the asset graph in
headless Chromium showing every asset materialized.

Chromium is Debian's ``chromium`` (``/usr/bin/chromium``, or ``EHRMAMBA_CHROMIUM``), driven by
Playwright; ``make test`` installs it when it runs as root. Without it the test fails and says
how to install it. ``EHRMAMBA_UPDATE_SCREENSHOT=1`` writes the screenshot to
``docs/asset-graph.png`` (the README's picture); otherwise it goes to the test's tmp directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EHRMAMBA_CHROMIUM") or "/usr/bin/chromium"
LOCATION = "ehrmamba"
JOB = "ehrmamba_main"
# the tiny preset and a handful of steps: the test is about the platform, not the model
TINY = {"preset": "tiny", "max_steps": 3, "max_epochs": 1, "epochs": 1, "max_len": 128}
# ceilings on the costly parts of evaluation: each still runs, on a handful of patients
CAPS = {"max_steps": 5, "forecast_patients": 2, "forecast_samples": 2, "zero_shot_per_task": 2}
TINY_RUN_CONFIG = REPO / "orchestration" / "run_configs" / "tiny.yaml"

pytestmark = pytest.mark.slow


def _chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install Debian's chromium "
            "(`sudo apt-get install -y chromium`; `make test` does it when run as root) or set "
            "EHRMAMBA_CHROMIUM to a Chromium binary."
        )
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """A running ``dagster dev`` and its GraphQL API."""

    def __init__(self, port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def gql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    chromium = _chromium()  # fail before spending minutes on the run
    root = tmp_path_factory.mktemp("ui_e2e")
    dagster_home = root / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(REPO / "orchestration" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EHRMAMBA_", "DAGSTER_", "MLFLOW_"))
    }
    env.update(
        DAGSTER_HOME=str(dagster_home),
        EHRMAMBA_HOME=str(root / "home"),
        EHRMAMBA_SYNTH_PATIENTS="60",
        PYTHONUNBUFFERED="1",
    )
    port = _free_port()
    log = root / "dagster-dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its webserver, daemon and code servers, stopped together
        )
    server = DagsterDev(port, log)
    try:
        _wait_until_loaded(server, proc)
        yield server, chromium, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # code servers it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_until_loaded(server: DagsterDev, proc: subprocess.Popen, timeout: float = 240) -> None:
    query = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({proc.returncode}):\n{server.log_tail()}")
        try:
            entries = server.gql(query)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            entries = []
        for entry in entries:
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                pytest.fail(f"code location failed to load: {loaded['message']}")
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED" and loaded:
                return
        time.sleep(1)
    pytest.fail(f"dagster dev did not load {LOCATION} in {timeout:.0f}s:\n{server.log_tail()}")


def _tiny_run_config(server: DagsterDev) -> dict:
    """The job's default op config with the tiny preset wherever an op takes one, so assets
    added later (finetuning, evaluation, serving) are configured without editing this test."""
    answer = server.gql(
        """query($s: PipelineSelector!) { runConfigSchemaOrError(selector: $s) {
            __typename ... on RunConfigSchema { rootDefaultYaml } } }""",
        {"s": _selector(pipeline_key="pipelineName")},
    )["runConfigSchemaOrError"]
    assert answer["__typename"] == "RunConfigSchema", answer
    ops = yaml.safe_load(answer["rootDefaultYaml"]).get("ops", {})
    curated = {}
    if TINY_RUN_CONFIG.exists():  # the repository's own tiny preset, where it has one
        curated = yaml.safe_load(TINY_RUN_CONFIG.read_text()).get("ops", {})
    for name, op in ops.items():
        config = op.get("config") if isinstance(op, dict) else None
        if isinstance(config, dict):
            config.update({k: v for k, v in TINY.items() if k in config})
            config.update((curated.get(name) or {}).get("config") or {})
            config.update({k: min(v, config[k]) for k, v in CAPS.items() if k in config})
    return {"ops": ops}


def _selector(pipeline_key: str = "jobName") -> dict:
    return {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        pipeline_key: JOB,
    }


def _launch_and_wait(server: DagsterDev, run_config: dict, timeout: float = 900) -> str:
    launched = server.gql(
        """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""",
        {"p": {"selector": _selector(), "runConfigData": run_config}},
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = server.gql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    if status != "SUCCESS":
        failures = server.gql(
            """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection {
                events { __typename ... on ExecutionStepFailureEvent { stepKey
                error { message } } } } } } }""",
            {"id": run_id},
        )["runOrError"]["eventConnection"]["events"]
        reasons = [
            f"{e['stepKey']}: {e['error']['message']}"
            for e in failures
            if e["__typename"] == "ExecutionStepFailureEvent"
        ]
        pytest.fail(f"run {run_id} ended {status}: {reasons}\n{server.log_tail()}")
    return run_id


def _assets(server: DagsterDev) -> list[dict]:
    return [
        a
        for a in server.gql(
            """{ assetNodes { assetKey { path } groupName isMaterializable
                assetMaterializations(limit: 1) { runId } } }"""
        )["assetNodes"]
        if a["isMaterializable"]
    ]


@pytest.mark.timeout(1500)  # minutes on an idle 2-core machine; a loaded one needs slack
def test_full_materialization_from_the_api_shows_every_asset_materialized_in_the_graph(
    dagster_dev,
) -> None:
    server, chromium, root = dagster_dev
    run_id = _launch_and_wait(server, _tiny_run_config(server))

    # every asset in the repository, as the API lists it now, was materialized by that run
    assets = _assets(server)
    assert len(assets) >= 30
    not_by_run = [
        "/".join(a["assetKey"]["path"])
        for a in assets
        if [m["runId"] for m in a["assetMaterializations"]] != [run_id]
    ]
    assert not not_by_run, f"not materialized by {run_id}: {not_by_run}"
    per_group: dict[str, int] = {}
    for a in assets:
        per_group[a["groupName"]] = per_group.get(a["groupName"], 0) + 1

    update_docs = os.environ.get("EHRMAMBA_UPDATE_SCREENSHOT") == "1"
    screenshot = REPO / "docs" / "asset-graph.png" if update_docs else root / "asset-graph.png"
    check_asset_graph(server.url, chromium, per_group, screenshot)
    assert screenshot.stat().st_size > 10_000


def check_asset_graph(url: str, chromium: str, per_group: dict[str, int], screenshot: Path) -> None:
    """Open the global asset graph; each stage group shows all its assets materialized."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 2560, "height": 1100})
            # the first visit of a fresh instance asks to join the community: skip it
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), lambda button: button.click()
            )
            page.goto(f"{url}/asset-groups")
            boxes = page.locator("[class*=collapsedGroupNodeBox]")
            expect(boxes).to_have_count(len(per_group), timeout=60_000)
            assert page.locator("[class*=collapsedGroupNodeBox][class*=minimal]").count() == 0, (
                "the graph is drawn too small to show statuses: widen the viewport"
            )
            for group, n in sorted(per_group.items()):
                box = boxes.filter(has=page.locator(f'[data-tooltip="{group}"]'))
                tags = box.locator(".BaseTag")
                # one tag per status: all the group's assets under the green one
                expect(tags).to_have_count(1, timeout=60_000)
                expect(tags).to_have_text(str(n))
                assert "green" in (tags.get_attribute("style") or ""), (group, tags.inner_html())
                # the tag's tooltip (the one its trigger points to, not a stale one) says so
                trigger = box.locator("[aria-describedby]").filter(has=page.locator(".BaseTag"))
                tags.hover()
                expect(trigger).to_have_count(1)
                tooltip = page.locator(
                    f'[role=tooltip][id="{trigger.get_attribute("aria-describedby")}"]'
                )
                expect(tooltip).to_have_text(f"{n} materialized asset{'s' if n != 1 else ''}")
            page.mouse.move(0, 0)
            page.screenshot(path=str(screenshot), clip=_around(boxes))
        finally:
            browser.close()


def _around(boxes, pad: int = 32) -> dict:
    """The rectangle holding every group node, with a margin."""
    rects = [boxes.nth(i).bounding_box() for i in range(boxes.count())]
    left = min(r["x"] for r in rects) - pad
    top = min(r["y"] for r in rects) - pad
    right = max(r["x"] + r["width"] for r in rects) + pad
    bottom = max(r["y"] + r["height"] for r in rects) + pad
    return {"x": max(0, left), "y": max(0, top), "width": right - left, "height": bottom - top}

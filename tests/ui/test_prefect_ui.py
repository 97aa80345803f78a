"""What a user sees in the Prefect UI, checked in a real browser (headless Chromium + Playwright).

The runs are made the way a user makes them (the `interlinked` CLI against the test stack); the
pages are the Prefect server's own UI, read the way a user reads them: the run's page, its state
badge, its logs and its Artifacts tab.
"""

from __future__ import annotations

import json
import shlex
import shutil
import textwrap

import pytest

from _stack import cli_json, put_scripts, run_cli, wait_for_job

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

SCRIPTS = {
    "add.py": """
        def myfunc(args):
            print("the sum is", args["a"] + args["b"])
            return args["a"] + args["b"]
    """,
    "fail.py": """
        def explode(args):
            raise RuntimeError("deliberate failure for the UI check")
    """,
}


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium; `make test` does it as root)"
        )
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (make install)"
    )
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def ui_password(stack_handle) -> str | None:
    """What the UI's login form asks for: PREFECT_API_AUTH_STRING as `interlinked env` prints it
    (None on a stack started with INTERLINKED_PREFECT_AUTH=off)."""
    stack_handle.ensure_up()
    result = run_cli("env")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name == "PREFECT_API_AUTH_STRING":
            return shlex.split(value)[0]
    from interlinked.settings import Settings

    assert not Settings().prefect_auth, (
        f"`interlinked env` prints no PREFECT_API_AUTH_STRING:\n{result.stdout}"
    )
    return None


def _log_in(page, ui_url: str, password: str) -> None:
    """Open the UI: the server asks for its secret (401), the UI shows its login form; submit it."""
    page.goto(ui_url)
    page.wait_for_url("**/login**")
    page.get_by_placeholder("admin:pass").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture
def page(new_page, stack_handle, ui_password):
    """A browser page logged in to the stack's Prefect UI through its login form."""
    if ui_password is not None:
        _log_in(new_page, stack_handle.ensure_up()["prefect_ui_url"], ui_password)
    return new_page


def test_the_ui_asks_for_the_password_and_refuses_a_wrong_one(new_page, stack, ui_password):
    if ui_password is None:
        pytest.skip("the stack runs with INTERLINKED_PREFECT_AUTH=off: its UI asks for no password")
    new_page.goto(f"{stack['prefect_ui_url']}/runs")
    new_page.wait_for_url("**/login**")
    new_page.get_by_placeholder("admin:pass").fill("interlinked:wrong")
    new_page.get_by_role("button", name="Login").click()
    new_page.get_by_text("Authentication failed.").first.wait_for()
    assert "/login" in new_page.url


@pytest.fixture(scope="module")
def script_runs(stack_handle, tmp_path_factory):
    """A completed and a failed script job, submitted through the CLI and waited for."""
    stack_handle.ensure_up()
    directory = tmp_path_factory.mktemp("ui-scripts")
    for name, source in SCRIPTS.items():
        (directory / name).write_text(textwrap.dedent(source).lstrip())
    jobs = {
        "ok": {"func": "myfunc", "arguments": {"a": 20, "b": 22}, "name": "UI sum", "script": "add.py"},
        "failed": {"func": "explode", "name": "UI failure", "script": "fail.py"},
    }
    submitted = {}
    for key, description in jobs.items():
        path = directory / f"{key}.json"
        path.write_text(json.dumps(description))
        result = run_cli("submit", str(path), "--json", "--wait", cwd=directory, timeout=300)
        assert result.returncode in (0, 1), result.stderr
        submitted[key] = json.loads(result.stdout)
    return submitted


def _open_run(page, url: str, state: str) -> str:
    """Open a flow run's page and wait until its state badge shows ``state``; the page's text."""
    page.goto(url)
    page.get_by_text(state, exact=True).first.wait_for()
    return page.inner_text("body")


def test_a_completed_script_job_shows_its_state_tags_logs_and_summary(page, script_runs):
    run = script_runs["ok"]
    assert run["state"] == "COMPLETED"
    text = _open_run(page, run["ui_url"], "Completed")
    assert "UI sum" in text, "the run is named after the job"
    assert f"job:{run['job_id']}" in text, "the job's tag is on the run"
    page.get_by_text("the sum is 42").first.wait_for()  # the script's own output in the run's logs
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"script-job-{run['job_id']}").first.wait_for()
    assert "Script job UI sum: COMPLETED" in page.inner_text("body")


def test_a_failed_script_job_shows_failed_with_the_error_in_its_logs(page, script_runs):
    run = script_runs["failed"]
    assert run["state"] == "FAILED"
    _open_run(page, run["ui_url"], "Failed")
    page.get_by_text("deliberate failure for the UI check").first.wait_for()
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("Script job UI failure: FAILED").first.wait_for()


def test_the_runs_page_lists_both_jobs(page, script_runs, stack):
    page.goto(script_runs["ok"]["ui_url"].split("/runs/")[0] + "/runs")
    page.get_by_text("UI sum").first.wait_for()
    page.get_by_text("UI failure").first.wait_for()


@pytest.fixture(scope="module")
def drained(stack_handle, tmp_path_factory):
    """A small collection drained by one `drain-collection` run (one task fails on purpose)."""
    import uuid

    stack_handle.ensure_up()
    collection = f"ui-{uuid.uuid4().hex[:6]}"
    path = tmp_path_factory.mktemp("ui-tasks") / "tasks.jsonl"
    tasks = [{"id": f"s{i}", "command": "echo ok"} for i in range(12)] + [{"id": "bad", "command": "exit 3"}]
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    added = run_cli("tasks", "add", collection, "--file", str(path))
    assert added.returncode == 0, added.stderr
    result = run_cli("tasks", "drain", collection, "--wait", "--json", timeout=600)
    assert result.returncode == 1, result.stderr  # the failing task
    [run] = json.loads(result.stdout)["flow_runs"]
    return collection, run["id"], stack_handle.ensure_up()


def test_a_drain_run_shows_its_progress_and_the_collection_table(page, drained):
    collection, run_id, stack = drained
    run_url = f"{stack['prefect_ui_url']}/runs/flow-run/{run_id}"
    _open_run(page, run_url, "Completed")
    page.get_by_text("Artifacts", exact=True).first.click()
    # The progress artifact's own page shows where the drain got to.
    page.get_by_text(f"Tasks of collection {collection} finished").first.click()
    page.get_by_text("Progress: 100%").first.wait_for()
    # The collection's status table: one row of counts per state, and this drain's own work.
    _open_run(page, run_url, "Completed")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"collection-{collection}-status").first.click()
    page.get_by_text("this drain: done").first.wait_for()
    row = page.get_by_text(collection, exact=True).last.locator("xpath=ancestor::tr[1]").inner_text()
    assert row.split()[1:7] == ["0", "0", "12", "1", "0", "13"], row


@pytest.fixture(scope="module")
def lifecycle_job(stack_handle):
    """A lifecycle job (`jobs create script --dispatch`) whose script reports progress and metrics."""
    import boto3

    stack = stack_handle.ensure_up()
    script = """
        from interlinked import jobs

        def work(args):
            jobs.progress(0.5, {"samples_seen": 120, "stage": "aligning"})
            return 1
    """
    put_scripts(boto3.client("s3"), stack["buckets"]["data"], {"ui-jobs/progress.py": script})
    description = {"name": "UI lifecycle", "script": "ui-jobs/progress.py", "func": "work"}
    job = cli_json("jobs", "create", "script", "--input", json.dumps(description), "--dispatch")
    shown = wait_for_job(job["id"])
    assert shown["state"] == "SUCCEEDED", shown
    return shown, stack


def test_a_lifecycle_job_run_shows_its_progress_and_metrics_table(page, lifecycle_job):
    job, stack = lifecycle_job
    run_url = f"{stack['prefect_ui_url']}/runs/flow-run/{job['flowRunId']}"
    _open_run(page, run_url, "Completed")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"job-{job['id']}-execution").first.click()
    page.get_by_text("metric: samples_seen").first.wait_for()
    row = page.get_by_text("metric: stage", exact=True).last.locator("xpath=ancestor::tr[1]").inner_text()
    assert "aligning" in row, row
    # The progress artifact of the run: the execution ended, so 100 %.
    _open_run(page, run_url, "Completed")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("samples_seen 120").first.click()
    page.get_by_text("Progress: 100%").first.wait_for()


@pytest.fixture(scope="module")
def prepare_job(stack_handle):
    """A `prepare-experiment` job (dispatched by the CLI) whose source does not exist: it fails."""
    import uuid

    stack = stack_handle.ensure_up()
    task = {
        "uuid": str(uuid.uuid4()),
        "socketId": "ui-test",
        "experimentId": f"ui-missing-{uuid.uuid4().hex[:6]}",
        "timeout": "2099-12-31 00:00:00",
        "body": {
            "name": "PrepareExperiment",
            "sourceBucket": stack["buckets"]["data"],
            "sourceMatrixPath": "ui-test/no-such-source/",
            "config": {"minGenes": 20, "nTopGenes": 100, "resolution": 0.5},
        },
    }
    job = cli_json(
        "jobs", "create", "prepare-experiment", "--input", json.dumps({"request": task}), "--dispatch"
    )
    shown = wait_for_job(job["id"], timeout=300)
    assert shown["state"] == "FAILED", shown
    return shown, stack


def test_a_prepare_experiment_job_run_shows_its_execution_and_failure_reason(page, prepare_job):
    job, stack = prepare_job
    run_url = f"{stack['prefect_ui_url']}/runs/flow-run/{job['flowRunId']}"
    _open_run(page, run_url, "Failed")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"job-{job['id']}-execution").first.click()
    row = page.get_by_text("failure reason", exact=True).last.locator("xpath=ancestor::tr[1]").inner_text()
    assert "SOURCE_NOT_FOUND" in row and "ui-test/no-such-source" in row, row

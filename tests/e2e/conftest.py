"""One JupyterLab server and one headless Chromium per test session, shared by the end-to-end tests; a Jupyter
Notebook 7 server for the tests that ask for one. Every page's console is watched: a test fails on a console
error or warning (or an uncaught page error) unless the allow-list below says why it is not ours."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.servers import free_port, stop, wait_ready

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent.parent / "notebooks"
ARTIFACTS = HERE.parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

# Console messages that come from the widgets: anywidget imports our bundles from blob: URLs (so their errors
# and their image URLs both say blob:), and our class names and package name start so.
WIDGET_MARKERS = ("blob:", "neuronwidgets", "anywidget", "nw-")
# Known console noise that is not ours, each with the reason; everything else fails the test. (regex on the
# line "<type>: <text> @ <url>:<line>", why it is not ours)
CONSOLE_ALLOWED: list[tuple[str, str]] = [
    (
        r"^warning: Menu entry for command '[\w:-]+' is duplicated\. @ \S*/static/notebook/",
        "Notebook 7's own menus list some JupyterLab commands twice (logged while its shell starts)",
    ),
    (
        r"^warning: \[yjs#509\] Not same Y\.Doc @ \S*/static/notebook/",
        "Yjs inside Notebook 7's document model (the notebook's shared Y.Doc), logged on opening a notebook",
    ),
    (
        r"(?s)^page error: Cannot read properties of undefined \(reading 'schema'\)\n.*?/static/notebook/notebook_core",
        "Notebook 7's shortcuts plugin reads a settings schema not loaded yet, on opening a notebook (a race:"
        " jupyter/notebook#7862)",
    ),
    (
        r"^error: Failed to load resource: net::ERR_NAME_NOT_RESOLVED @ https://cdnjs\.cloudflare\.com/ajax/libs/"
        r"(mathjax/2\.7\.7/|require\.js/2\.1\.10/)",
        "the server's nbconvert HTML export (test_explorer's static picture) links MathJax and require.js from"
        " cdnjs; the test machine is offline",
    ),
]


@contextmanager
def _jupyter_server(root: Path, module: str, log_path: Path, extra_args: tuple[str, ...] = ()) -> Iterator[dict]:
    """`python -m <module>` (jupyterlab or notebook) on 127.0.0.1 with the test notebooks and notebooks/ in
    ``root``, its own config, runtime, settings and IPython dirs under it (nothing touches $HOME), a free port and
    a random token; stopped by PID at the end."""
    for notebook in [*HERE.glob("*.ipynb"), *NOTEBOOKS.glob("*.ipynb")]:
        shutil.copy(notebook, root / notebook.name)
    home = root / ".jupyter-home"
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        env[var] = str(home / sub)
        (home / sub).mkdir(parents=True)
    notify = home / "settings" / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
    )
    port, token = free_port(), secrets.token_hex(16)
    log = open(log_path, "w")  # noqa: SIM115 (closed at the end)
    start = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            f"--config={HERE / 'jupyter_server_test_config.py'}",
            f"--port={port}",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            *extra_args,
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/api/status?token={token}", proc, "the Jupyter server")
        print(f"[timing] {module} ready in {time.monotonic() - start:.1f}s")
        yield {"url": url, "token": token, "root": root}
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[dict]:
    """A JupyterLab on 127.0.0.1 with the test notebooks and notebooks/ in its root; stopped by PID at the end."""
    with _jupyter_server(tmp_path_factory.mktemp("lab"), "jupyterlab", artifacts / "jupyter.log") as server:
        yield server


@pytest.fixture(scope="module")
def jupyter_notebook(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[dict]:
    """A Jupyter Notebook 7 (`python -m notebook`, what `jupyter notebook` runs) set up like the JupyterLab
    above, in a root of its own; `window.jupyterapp` is its NotebookApp. Stopped when its test module ends."""
    try:
        from notebook import __version__ as version
    except ImportError:
        version = "0"
    if int(version.split(".")[0]) < 7:
        message = f"Notebook 7 is missing (found {version}): it is in the dev extras, pip install -e .[dev]"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    args = ("--JupyterNotebookApp.expose_app_in_browser=True",)
    with _jupyter_server(tmp_path_factory.mktemp("nb7"), "notebook", artifacts / "notebook7.log", args) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    from playwright import sync_api

    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """The page's console errors and warnings and its uncaught errors, each as one line with where it came
    from; ``problems()`` are those the allow-list does not excuse, ``ours()`` those from the widgets."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.all: list[str] = []  # every console message, for the failure printout

    def on_console(self, msg) -> None:
        location = msg.location or {}
        where = f" @ {location.get('url', '')}:{location.get('lineNumber', '')}" if location.get("url") else ""
        line = f"{msg.type}: {msg.text}{where}"
        self.all.append(line)
        if msg.type in ("error", "warning"):
            self.lines.append(line)

    def on_page_error(self, error) -> str:
        line = f"page error: {error}\n{getattr(error, 'stack', '') or ''}".rstrip()
        self.all.append(line)
        self.lines.append(line)
        return line

    @staticmethod
    def allowed(line: str) -> bool:
        return any(re.search(pattern, line) for pattern, _ in CONSOLE_ALLOWED)

    def problems(self) -> list[str]:
        return [line for line in self.lines if not self.allowed(line)]

    def ours(self) -> list[str]:
        return [line for line in self.problems() if any(m in line.lower() for m in WIDGET_MARKERS)]

    def report(self) -> str:
        problems, ours = self.problems(), self.ours()
        others = [line for line in problems if line not in ours]
        return (
            f"{len(problems)} console errors/warnings ({len(ours)} from the widgets, {len(others)} others"
            f"; {len(self.lines) - len(problems)} allowed):\n"
            + "\n".join(f"  [widgets] {line}" for line in ours)
            + ("\n" if ours and others else "")
            + "\n".join(f"  [other] {line}" for line in others)
        )


def _new_page(browser, artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page; its tests fail on a page error (one the allow-list does not excuse) or a dialog, and (see
    pytest_runtest_call) on console errors and warnings; saves failure-<test>.png on failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    console = Console()

    def on_page_error(error) -> None:
        if not console.allowed(console.on_page_error(error)):
            problems.append(f"page error: {error}")

    page.on("pageerror", on_page_error)
    page.on("console", console.on_console)

    def on_dialog(dialog) -> None:
        problems.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.problems = problems
    page.console = console
    yield page
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        page.screenshot(path=str(artifacts / f"failure-{request.node.name}.png"))
        print("\n".join(console.all[-40:]))
    context.close()


@pytest.fixture
def lab_page(browser, jupyter_lab: dict, artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page for the JupyterLab server."""
    yield from _new_page(browser, artifacts, request)


@pytest.fixture
def notebook_page(browser, jupyter_notebook: dict, artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page for the Notebook 7 server."""
    yield from _new_page(browser, artifacts, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A test that used a page fails at its end on console errors or warnings that are not allow-listed, with
    all of them printed (printed too when it failed otherwise); the counts go to test-artifacts/e2e-console.log."""
    pages = [item.funcargs[name] for name in ("lab_page", "notebook_page") if name in getattr(item, "funcargs", {})]

    def log_counts() -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        with open(ARTIFACTS / "e2e-console.log", "a") as log:
            for page in pages:
                console: Console = page.console
                log.write(
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {item.nodeid}: {len(console.problems())} problems, "
                    f"{len(console.ours())} from the widgets, {len(console.lines)} errors/warnings in all\n"
                )

    try:
        result = yield
    except BaseException:
        log_counts()
        for page in pages:
            if page.console.problems():
                print(page.console.report())
        raise
    log_counts()
    for page in pages:
        if page.console.problems():
            pytest.fail(page.console.report(), pytrace=False)
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)

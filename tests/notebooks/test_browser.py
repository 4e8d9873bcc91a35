"""The notebooks as a user meets them: ``jupyter lab notebooks/`` driven by headless Chromium (Selenium).

JupyterLab is started from the repository as the README says (its own port and token; temporary config,
settings, runtime, data, workspace and checkpoint directories, and no autosave: nothing of the user's is read,
nothing is written into the checkout), with the
simulator forced in the kernel's environment (``NUMBA_ENABLE_CUDASIM=1`` unless the caller set it) and figures
drawn inline. The browser runs ``Run All Cells`` from the menu, checks that no cell shows an error and that
figures are rendered, moves the ``explore`` notebook's widgets and checks that its figure is redrawn, and
reveals a teaching notebook's hidden answers. A screenshot of each state is saved under
``$DLRMLAB_BROWSER_OUT`` (else the test's temporary folder).

Marked ``browser`` and deselected unless ``-m`` names it (``tests/conftest.py``): ``.ci/run`` runs it as a step
of its own after the README's test command, ``python -m pytest -m browser``. It needs Debian's ``chromium`` and
``chromium-driver`` (or ``DLRMLAB_CHROMIUM`` / ``DLRMLAB_CHROMEDRIVER``) and ``selenium`` (the ``browser`` extra);
without them it is skipped, unless ``DLRMLAB_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DLRMLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("DLRMLAB_CHROMEDRIVER") or shutil.which("chromedriver")


try:  # the `browser` extra
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None


def _missing() -> str | None:
    """Why the browser test cannot run here (None: it can)."""
    if not CHROMIUM:
        return "no Chromium found (apt-get install chromium chromium-driver, or set DLRMLAB_CHROMIUM)"
    if not CHROMEDRIVER:
        return "no chromedriver found (apt-get install chromium-driver, or set DLRMLAB_CHROMEDRIVER)"
    if webdriver is None:
        return "selenium is not installed (pip install -e '.[notebooks,browser]')"
    for module in ("jupyterlab", "ipywidgets", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[notebooks,browser]')"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    why = _missing()
    if why and os.environ.get("DLRMLAB_REQUIRE_BROWSER") not in (None, "", "0"):
        pytest.fail(f"the browser test is required here (DLRMLAB_REQUIRE_BROWSER) but {why}", pytrace=False)
    if why:
        pytest.skip(why)


#: Seconds: JupyterLab's start and page load; one notebook's Run All; one redraw of a widget's output.
START_S, RUN_ALL_S, REDRAW_S = 120, 240, 90

# JupyterLab settings of this test's own (temporary) settings directory: no autosave, so that running the
# committed notebooks never writes outputs into them; every cell in the page (no windowing), so that outputs
# scrolled out of view can be checked; no news or update checks (the machine may have no network).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,1100"]


@dataclass(frozen=True)
class Lab:
    """A JupyterLab server (started: :meth:`ready` waits until it answers)."""

    url: str
    token: str
    root: Path
    runtime: Path
    proc: subprocess.Popen
    log: Path

    def ready(self) -> Lab:
        deadline = time.monotonic() + START_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.proc.returncode}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError):
                self.api("/api/status")
                return self
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {START_S} s:\n{_tail(self.log)}")
            time.sleep(0.5)

    def kernel_commands(self) -> list[list[str]]:
        """The command lines of this server's kernels (their connection files are in its runtime directory)."""
        cmds = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                argv = cmdline.read_bytes().decode(errors="replace").split("\0")
                if any(a.startswith(str(self.runtime)) and "kernel-" in a for a in argv):
                    cmds.append([a for a in argv if a])
        return cmds

    def api(self, path: str) -> object:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jupyter() -> list[str]:
    """The environment's own ``jupyter`` (``.venv/bin/jupyter`` as the README says), else ``python -m jupyter``."""
    exe = Path(sys.executable).with_name("jupyter")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "jupyter"]


@contextlib.contextmanager
def jupyter_lab(root: Path, tmp: Path) -> Iterator[Lab]:
    """Start ``jupyter lab ROOT`` from the repository root, on a free port with a token, isolated settings."""
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython",
                                          "checkpoints")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for plugin, values in LAB_SETTINGS.items():
        path = dirs["settings"] / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
           "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "IPYTHONDIR": str(dirs["ipython"]),
           # The kernel inherits these: figures inline (CI sets MPLBACKEND=Agg), the simulator unless asked.
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "NUMBA_ENABLE_CUDASIM": os.environ.get("NUMBA_ENABLE_CUDASIM", "1")}
    port, token = _free_port(), secrets.token_hex(16)
    log = (tmp / "jupyter-lab.log").open("w")
    args = [str(root.relative_to(ROOT)) if root.is_relative_to(ROOT) else str(root), "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}"]
    if os.geteuid() == 0:  # CI runs as root
        args.append("--allow-root")
    proc = subprocess.Popen([*_jupyter(), "lab", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Lab(f"http://127.0.0.1:{port}", token, root, dirs["runtime"], proc, tmp / "jupyter-lab.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


@contextlib.contextmanager
def chromium(tmp: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium from the system (no download at run time), with a fresh profile."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    tmp.mkdir(parents=True, exist_ok=True)
    opts = Options()
    opts.binary_location = CHROMIUM
    opts.unhandled_prompt_behavior = "accept"  # "leave the page?" when moving on from a notebook with outputs
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log")),
                              options=opts)
    try:
        yield driver
    finally:
        driver.quit()


# --- the page -----------------------------------------------------------------------------------------------------

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
# JupyterLab renders an error (a cell's or a widget callback's traceback) as stderr text: told apart from warnings
# by IPython's traceback header or a last line naming the exception.
STDERR = f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^[\w.]*(Error|Exception|Interrupt)\b(:.*)?\Z", re.S | re.M)
FIGURE = f"{PANEL} .jp-OutputArea-output img"


class Page:
    """One browser tab on a JupyterLab server; screenshots go to ``shots``."""

    def __init__(self, driver: webdriver.Chrome, lab: Lab, shots: Path):
        self.driver, self.lab, self.shots = driver, lab, shots

    def wait(self, what: str | Callable[[], str], timeout: float, cond: Callable[[], object]) -> object:
        """``cond()`` once truthy; else fail, saying what was awaited (``what()``: in the state at the timeout)."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(lambda _: cond())
        except TimeoutException:
            what = what() if callable(what) else what
            shot = self.shot("timeout-" + re.sub(r"\W+", "-", what)[:60])
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (screenshot {shot})", pytrace=False)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def open_notebook(self, name: str) -> None:
        """Open ``name``: the first time by its URL (JupyterLab loads), then from the file browser by a double
        click; accept the kernel dialog as a user would (JupyterLab offers its default kernel, the ``.venv``
        Python). The notebook opened becomes the current one (:data:`PANEL`)."""
        if not self.driver.current_url.startswith(f"{self.lab.url}/lab"):
            self.driver.get(f"{self.lab.url}/lab/tree/{name}?token={self.lab.token}")
        else:
            item = self.driver.find_element(By.XPATH, f"//li[contains(@class, 'jp-DirListing-item')]"
                                                      f"[.//span[text()='{name}']]")
            ActionChains(self.driver).double_click(item).perform()
            self.wait(f"{name}'s tab", 30, lambda: self.js(
                "const t = document.querySelector('.lm-DockPanel-tabBar .lm-mod-current .lm-TabBar-tabLabel');"
                "return t && t.textContent.trim()") == name)
        cells = len(json.loads((self.lab.root / name).read_text())["cells"])
        self.wait(lambda: f"{name} to load its {cells} cells and start its kernel (kernel: {self.kernel_status()})",
                  START_S, lambda: self._kernel_ready()
                  and self.js("return document.querySelectorAll(arguments[0] + ' .jp-Cell').length", PANEL) == cells)

    def kernel_status(self) -> tuple[str, str]:
        """(kernel name, execution status) as the notebook's toolbar shows them."""
        return tuple(self.js(
            "const p = document.querySelector(arguments[0]); if (!p) return ['', ''];"
            "const n = p.querySelector('.jp-KernelName'), e = p.querySelector('.jp-Notebook-ExecutionIndicator');"
            "return [n ? n.textContent.trim() : '', e ? e.getAttribute('data-status') || '' : '']", PANEL))

    def _kernel_ready(self) -> bool:
        buttons = self.driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept")
        if buttons:  # "Select Kernel": the default (Python 3, ipykernel) is preselected
            buttons[0].click()
            return False
        name, status = self.kernel_status()
        return name not in ("", "No Kernel") and status == "idle"

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then its item labelled ``item``."""
        self.driver.find_element(By.XPATH, f"//div[contains(@class, 'lm-MenuBar-itemLabel')][text()='{menu}']").click()
        self.wait(f"menu item {menu} > {item}", 10, lambda: self.driver.find_elements(
            By.XPATH, f"//li[contains(@class, 'lm-Menu-item')][.//div[contains(@class, 'lm-Menu-itemLabel')]"
                      f"[text()='{item}']]"))[0].click()

    def prompts(self) -> list[str]:
        return self.js("return Array.from(document.querySelectorAll(arguments[0] + ' .jp-CodeCell "
                       ".jp-InputArea-prompt')).map(e => e.textContent.trim())", PANEL)

    def run_all(self, name: str) -> None:
        """Run > Run All Cells, then wait until no cell is queued or running; every code cell ran, or one failed."""
        self.menu("Run", "Run All Cells")
        self.wait(f"{name}'s cells to be queued", 30, lambda: any(p == "[*]:" for p in self.prompts())
                  or all(p[1:-2].strip().isdigit() for p in self.prompts()))  # (or, quick, already run)
        self.wait(lambda: f"{name}'s cells to finish (prompts {self.prompts()})", RUN_ALL_S,
                  lambda: not any(p == "[*]:" for p in self.prompts()))
        self.assert_no_error(name)
        not_run = [i for i, p in enumerate(self.prompts()) if not p[1:-2].strip().isdigit()]
        assert not not_run, f"{name}: code cells {not_run} did not run (prompts {self.prompts()})"

    def errors(self) -> list[str]:
        """The error outputs (their text) of the current notebook, its widgets' outputs included."""
        texts = self.js("return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)", STDERR)
        return [t for t in texts if TRACEBACK.search(t.strip())]

    def assert_no_error(self, name: str) -> None:
        errors = self.errors()
        if errors:  # scroll the first one into view for the screenshot
            self.js("const e = Array.from(document.querySelectorAll(arguments[0]))"
                    ".find(e => e.innerText.includes(arguments[1])); if (e) e.scrollIntoView()",
                    STDERR, errors[0][-60:])
        shot = self.shot(f"{Path(name).stem.split()[0]}-error") if errors else None
        assert not errors, f"{name} shows an error (screenshot {shot}):\n" + "\n---\n".join(errors)

    def figures(self, scope: str = FIGURE) -> list[str]:
        """The ``src`` of each rendered figure (an ``<img>`` in an output area) under ``scope`` (read in one go:
        a redraw replaces the elements)."""
        return self.js("return Array.from(document.querySelectorAll(arguments[0]))"
                       ".filter(e => e.naturalWidth > 0).map(e => e.src)", scope)

    def show(self, element) -> None:
        self.js("arguments[0].scrollIntoView({block: 'center'})", element)

    def widget(self, kind: str, label: str):
        """The ipywidgets control of ``kind`` (``slider``, ``dropdown``) whose description is ``label``."""
        css = {"slider": "widget-slider", "dropdown": "widget-dropdown"}[kind]
        found = self.wait(f"the {label!r} {kind} widget", 60, lambda: self.driver.find_elements(
            By.XPATH, f"//div[contains(@class, '{css}')][.//label[normalize-space()='{label}']]"))
        return found[0]

    def move_slider(self, label: str, key: str | None = None) -> str:
        """Move the slider ``label`` one step with the keyboard (default: the right arrow), as a user would after
        clicking its handle; its new readout."""
        key = key or Keys.ARROW_RIGHT  # selenium is optional: nothing of it is evaluated at import
        slider = self.widget("slider", label)
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        before = readout.text
        self.show(slider)
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        handle.click()
        handle.send_keys(key)
        self.wait(f"the {label!r} slider to move from {before}", 10, lambda: readout.text != before)
        return readout.text

    def drag_slider(self, label: str, dx: int) -> str:
        """Drag the handle of slider ``label`` by ``dx`` pixels in small moves, as a mouse does; its new readout."""
        slider = self.widget("slider", label)
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        before = readout.text
        self.show(slider)
        drag = ActionChains(self.driver).click_and_hold(slider.find_element(By.CSS_SELECTOR, ".noUi-handle"))
        for _ in range(5):
            drag.move_by_offset(dx // 5, 0).pause(0.2)
        drag.release().perform()
        self.wait(f"the {label!r} slider to move from {before}", 10, lambda: readout.text != before)
        return readout.text

    def count_redraws(self, scope: str) -> None:
        """From now on, count the figures drawn into the (first) element ``scope`` (``window.dlrmlabRedraws``)."""
        self.js("window.dlrmlabRedraws = 0; new MutationObserver(ms => ms.forEach(m => m.addedNodes.forEach(n => {"
                "  if (n.tagName === 'IMG' || (n.querySelector && n.querySelector('img'))) window.dlrmlabRedraws++;"
                "}))).observe(document.querySelector(arguments[0]), {childList: true, subtree: true})", scope)

    def redraws_once_idle(self, quiet_s: float = 4.0) -> int:
        """The figures counted by :meth:`count_redraws`, once the kernel has been idle for ``quiet_s`` seconds."""
        idle_since = [time.monotonic()]

        def quiet() -> bool:
            if self.kernel_status()[1] != "idle":
                idle_since[0] = time.monotonic()
            return time.monotonic() - idle_since[0] >= quiet_s

        self.wait("the kernel to stay idle", REDRAW_S * 3, quiet)
        return self.js("return window.dlrmlabRedraws")

    def choose(self, label: str, option: str) -> None:
        dropdown = self.widget("dropdown", label)
        self.show(dropdown)
        Select(dropdown.find_element(By.TAG_NAME, "select")).select_by_visible_text(option)

    def wait_redraw(self, scope: str, before: list[str], what: str) -> list[str]:
        """Wait until the figures under ``scope`` differ from ``before`` and the kernel is idle, stopping early on
        an error output (then failing with it); the new figures."""
        def redrawn() -> bool:
            if self.errors():
                return True
            now = self.figures(scope)
            return bool(now) and now != before and self.kernel_status()[1] == "idle"

        self.wait(f"the figure to be redrawn after {what}", REDRAW_S, redrawn)
        self.assert_no_error(what)
        return self.figures(scope)


FAILING = {
    "cells": [{"cell_type": "code", "id": "failing", "metadata": {}, "execution_count": None, "outputs": [], "source": (
        "import ipywidgets as widgets\n"
        "from IPython.display import display\n\n"
        "def draw(x):\n"
        "    if x > 1:\n"
        "        raise RuntimeError('the callback raised on purpose')\n"
        "    print('x =', x)\n\n"
        "slider = widgets.IntSlider(value=1, min=0, max=5, description='x')\n"
        "display(slider, widgets.interactive_output(draw, {'x': slider}))")}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("DLRMLAB_BROWSER_OUT")
    path = Path(out) if out else tmp_path_factory.mktemp("browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def labs(tmp_path_factory) -> Iterator[dict[str, Lab]]:
    """Both servers, started together: ``notebooks`` as the README says, ``failing`` on a throwaway notebook."""
    failing = tmp_path_factory.mktemp("failing-root")
    (failing / "failing.ipynb").write_text(json.dumps(FAILING))
    with (jupyter_lab(ROOT / "notebooks", tmp_path_factory.mktemp("lab")) as lab,
          jupyter_lab(failing, tmp_path_factory.mktemp("failing-lab")) as failing_lab):
        yield {"notebooks": lab, "failing": failing_lab}


@pytest.fixture(scope="module")
def lab(labs) -> Lab:
    return labs["notebooks"].ready()


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture(scope="module")
def page(driver, lab, shots) -> Page:
    return Page(driver, lab, shots)


def test_quickstart_runs_and_shows_figures(page):
    page.open_notebook("00_quickstart.ipynb")
    if Path("/proc/self/cmdline").exists():  # the kernel JupyterLab started is this environment's Python
        kernels = [Path(cmd[0]).parent for cmd in page.lab.kernel_commands()]
        assert kernels == [Path(sys.executable).parent], f"kernels not run by {sys.executable}: {kernels}"
    page.shot("quickstart-opened")
    page.run_all("00_quickstart.ipynb")
    figures = page.driver.find_elements(By.CSS_SELECTOR, FIGURE)
    assert page.figures(), "00_quickstart shows no rendered figure"
    page.show(figures[0])
    page.shot("quickstart-figure")


# The notebook names each widget output (``add_class``): the knobs' and the shape picker's are checked apart.
KNOBS_OUTPUT = f"{PANEL} .widget-output.explore-knobs"
WIDGET_OUTPUT = f"{KNOBS_OUTPUT} .jp-OutputArea-output img"
SHAPE_OUTPUT = f"{PANEL} .widget-output.explore-shape"
SHAPE_FIGURE = f"{SHAPE_OUTPUT} .jp-OutputArea-output img"


def test_explore_widgets_redraw_the_figure(page):
    page.open_notebook("explore.ipynb")
    page.run_all("explore.ipynb")
    first = page.figures(WIDGET_OUTPUT)
    assert len(first) == 1, f"explore: the widgets' output shows {len(first)} figures, not one"
    page.show(page.widget("dropdown", "variant"))
    page.shot("explore-widgets")
    cut = page.js("return Array.from(document.querySelectorAll(arguments[0] + ' .widget-label'))"
                  ".filter(e => e.offsetParent && e.scrollWidth > e.clientWidth).map(e => e.textContent)", PANEL)
    assert not cut, f"explore: the descriptions of widgets {cut} are cut off"

    page.count_redraws(KNOBS_OUTPUT)
    dragged = int(page.drag_slider("prefetch dist.", 60))
    assert dragged > 2, f"explore: dragging the prefetch distance slider right gave {dragged}"
    moved = page.wait_redraw(WIDGET_OUTPUT, first, "dragging the prefetch distance slider")
    page.shot("explore-slider-moved")
    redraws = page.redraws_once_idle()
    assert redraws == 1, f"explore: one drag of a slider redrew the figure {redraws} times (continuous_update?)"

    page.choose("dataset", "random")
    chosen = page.wait_redraw(WIDGET_OUTPUT, moved, "choosing the random dataset")
    assert chosen != first and len(chosen) == 1
    page.show(page.driver.find_element(By.CSS_SELECTOR, WIDGET_OUTPUT))
    page.shot("explore-dataset-chosen")


def test_explore_shape_picker_redraws_its_own_figure(page):
    """The second widget cell: one figure of its own, redrawn with the choice it states; the knobs' untouched."""
    if not page.driver.find_elements(By.CSS_SELECTOR, SHAPE_OUTPUT):  # run on its own: open and run the notebook
        page.open_notebook("explore.ipynb")
        page.run_all("explore.ipynb")
    first, knobs = page.figures(SHAPE_FIGURE), page.figures(WIDGET_OUTPUT)
    assert len(first) == 1, f"explore: the shape picker's output shows {len(first)} figures, not one"
    now = first
    for label, option in (("batch", "512"), ("row width", "32"), ("ids", "zipf:1.1")):
        page.choose(label, option)
        now = page.wait_redraw(SHAPE_FIGURE, now, f"choosing {label} {option} in the shape picker")
        assert len(now) == 1, f"explore: the shape picker shows {len(now)} figures after choosing {label} {option}"
    assert page.figures(WIDGET_OUTPUT) == knobs, "explore: the shape picker redrew the knobs' figure"
    page.show(page.driver.find_element(By.CSS_SELECTOR, SHAPE_FIGURE))
    page.shot("explore-shape-picked")


def test_a_teaching_notebook_hides_its_answers_until_revealed(page):
    page.open_notebook("T1_coalescing.ipynb")
    answers = "//div[contains(@class, 'jp-MarkdownCell')][.//strong[normalize-space()='Answers']]"
    assert not [e for e in page.driver.find_elements(By.XPATH, answers) if e.is_displayed()], "answers are not hidden"
    hidden = page.driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-InputPlaceholder")
    assert len(hidden) == 1, f"T1: {len(hidden)} collapsed cells, not one (the answers)"
    page.show(hidden[0])
    page.shot("teaching-answers-hidden")
    hidden[0].click()  # what a student clicks: the collapsed cell's placeholder
    shown = page.wait("the answers to show", 20, lambda: [
        e for e in page.driver.find_elements(By.XPATH, answers) if e.is_displayed()])
    page.show(shown[0])
    page.shot("teaching-answers-revealed")


def test_the_check_fails_when_a_widget_callback_raises(driver, labs, shots):
    """A throwaway notebook (in its own JupyterLab) whose slider callback raises: the checks must catch it."""
    page = Page(driver, labs["failing"].ready(), shots)
    page.open_notebook("failing.ipynb")
    page.run_all("failing.ipynb")  # the first draw works
    page.move_slider("x")
    with pytest.raises(AssertionError, match="the callback raised on purpose"):
        page.wait_redraw(f"{PANEL} .widget-output", [], "moving the slider x")

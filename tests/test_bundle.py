"""The built front end works wherever anywidget does (JupyterLab, Notebook 7, marimo, VS Code, Colab): one
self-contained ES module per widget, no network access, no API of one host.

VS Code and Colab cannot be run here; what their anywidget support documents is what this checks: the ESM
carries everything (no CDN, no loader), and the views use only the model API anywidget gives every host
(``get``/``set``/``save_changes``/``send``/``on``/``off``, ``widget_manager.get_model``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import neuronwidgets

STATIC = Path(neuronwidgets.__file__).parent / "static"
BUNDLES = sorted(STATIC.glob("*.js"))
pytestmark = pytest.mark.skipif(not BUNDLES, reason="the front end is not built (npm run build)")

HOST_ONLY = {
    "JupyterLab's application object": r"\bjupyterapp\b|\bwindow\.jupyterlab\b",
    "JupyterLab, Lumino or ipywidgets packages": r"@jupyterlab/|@lumino/|@jupyter-widgets/",
    "the classic Notebook's globals": r"\bIPython\.|\bJupyter\.notebook|\brequirejs\b",
    "an AMD or CommonJS loader": r"\bdefine\(|\brequire\(",
    "JupyterLab's DOM classes": r"[\"'.]jp-[A-Za-z]",
    "Colab's API": r"google\.colab",
    "VS Code's webview API": r"acquireVsCodeApi",
}
NETWORK = {
    "fetch": r"\bfetch\(",
    "XMLHttpRequest": r"XMLHttpRequest",
    "WebSocket": r"\bWebSocket\b",
    "a dynamic import": r"\bimport\(",
    "a URL": r"https?://(?!www\.w3\.org/2000/svg)",  # the SVG namespace is a name, never fetched
}


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_each_bundle_is_one_module_with_no_host_api_and_no_network(bundle: Path) -> None:
    code = bundle.read_text(encoding="utf-8")
    for what, pattern in {**HOST_ONLY, **NETWORK}.items():
        assert not re.search(pattern, code), f"{bundle.name} uses {what}: {re.search(pattern, code)[0]!r}"
    assert not re.search(r"\bimport\s*[{*\"']|\bimport\s+[\w$]+\s+from\b", code), f"{bundle.name} imports a module"
    assert re.search(r"export\s*\{[^}]*\bas default\b|export default\b", code), f"{bundle.name} has no default export"
    assert "innerHTML" not in code and "insertAdjacentHTML" not in code  # text is inserted as text


def test_the_css_reads_host_colours_only_with_fallbacks() -> None:
    css = (STATIC / "widgets.css").read_text(encoding="utf-8")
    bare = re.findall(r"var\(--(?:jp|vscode)-[\w-]+\)", css)
    assert not bare, f"host colours without a fallback (unstyled outside that host): {bare[:5]}"
    assert not re.search(r"@import|url\(\s*['\"]?https?:", css), "the CSS loads something from the network"

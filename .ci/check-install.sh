#!/usr/bin/env bash
# A user's install works: build the wheel and the sdist from a clean clone of HEAD, check what they carry,
# install the wheel into a fresh venv with no Node on PATH and no dev extras, and render the Explorer from it
# in JupyterLab (tests/e2e/test_installed.py, run from outside the repository).
#
#   PY=.venv/bin/python TORCH_PACKAGES="torch==... torchvision==..." bash .ci/check-install.sh
#
# PY: the dev venv's python (it has `build`); KEEP=1 keeps the temp dir (its path is printed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
[[ "$PY" == /* ]] || PY="$PWD/$PY"  # absolute, but not resolved: a venv's python is a symlink
TORCH_PACKAGES="${TORCH_PACKAGES:-torch torchvision}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nw-install.XXXXXX")"
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

phase_start=$SECONDS
phase() {  # prints how long the previous phase took: the check has a time budget inside `make test`
    echo "[check-install] $(( SECONDS - phase_start ))s  ${1}"
    phase_start=$SECONDS
}

# 1. A clean clone: uncommitted and ignored files (neuronwidgets/static/, node_modules/) cannot leak in.
git clone --quiet "$ROOT" "$WORK/src"
phase "cloned $(git -C "$WORK/src" rev-parse --short HEAD)"

# 2. The build hook's ensured-targets are every file package.json's build script writes (a new bundle that is
#    not listed would be left out of the check below, and could be missing from a wheel unnoticed).
"$PY" - "$WORK/src" <<'EOF'
import json, re, sys, tomllib
from pathlib import Path

src = Path(sys.argv[1])
script = json.loads((src / "package.json").read_text())["scripts"]["build"]
outdir = re.search(r"--outdir=(\S+)", script).group(1)
built = {f"{outdir}/{Path(entry).stem}{Path(entry).suffix if entry.endswith('.css') else '.js'}"
         for entry in re.findall(r"\bjs/\S+\.(?:js|ts|css)\b", script)}
hook = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["hooks"]["jupyter-builder"]
for key in ("ensured-targets", "skip-if-exists"):
    if set(hook[key]) != built:
        sys.exit(f"pyproject.toml {key} {sorted(hook[key])} != package.json build outputs {sorted(built)}")
(src.parent / "bundles.txt").write_text("\n".join(sorted(built)) + "\n")
print(f"bundles: {', '.join(sorted(built))}")
EOF
phase "pyproject's ensured-targets match package.json's build outputs"

# 3. sdist, then a wheel built from that sdist (python -m build does both), as a release would.
"$PY" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$WORK"/dist/*.whl)"
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
phase "built $(basename "$SDIST") and $(basename "$WHEEL")"

# 4. What they carry.
"$PY" - "$WHEEL" "$SDIST" "$WORK/bundles.txt" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path

wheel, sdist, bundles = sys.argv[1], sys.argv[2], Path(sys.argv[3]).read_text().split()
in_wheel = set(zipfile.ZipFile(wheel).namelist())
need = [*bundles, "neuronwidgets/py.typed", "neuronwidgets/demo/digits_cnn.pt", "neuronwidgets/demo/digits_test.npz",
        "neuronwidgets/demo/shapes_cnn.pt"]
problems = [f"wheel lacks {name}" for name in need if name not in in_wheel]
problems += [f"wheel has {name}" for name in sorted(in_wheel)
             if name.startswith(("tests/", "js/")) or "node_modules" in name or "__pycache__" in name]
top = tarfile.open(sdist).getnames()[0].split("/")[0]
in_sdist = {name.removeprefix(top + "/") for name in tarfile.open(sdist).getnames()}
need = ["package.json", "package-lock.json", "js/ranked-list.js", "js/widgets.css", "tests/e2e/conftest.py",
        "README.md", "LICENSE", "CHANGELOG.md", *bundles]
problems += [f"sdist lacks {name}" for name in need if name not in in_sdist]
problems += [f"sdist has {name}" for name in sorted(in_sdist) if "node_modules" in name or "__pycache__" in name]
if problems:
    sys.exit("\n".join(problems))
print(f"wheel: {len(in_wheel)} files, sdist: {len(in_sdist)} files; both carry the front end")
EOF

# 5. The sdist's sources build the front end on their own: without the prebuilt bundles it carries, a wheel
#    built from it runs npm and still gets every bundle (the hook's ensured-targets fail the build otherwise).
mkdir "$WORK/unpacked"
tar -xzf "$SDIST" -C "$WORK/unpacked"
rm -r "$WORK"/unpacked/*/neuronwidgets/static
"$PY" -m build --wheel --outdir "$WORK/dist-from-source" "$WORK"/unpacked/* >"$WORK/build-source.log" 2>&1 ||
    { tail -40 "$WORK/build-source.log"; exit 1; }
"$PY" - "$WORK"/dist-from-source/*.whl "$WORK/bundles.txt" <<'EOF'
import sys, zipfile
from pathlib import Path

missing = set(Path(sys.argv[2]).read_text().split()) - set(zipfile.ZipFile(sys.argv[1]).namelist())
sys.exit(f"wheel built from the sdist's sources lacks {sorted(missing)}" if missing else None)
EOF
phase "the sdist's js/ builds a complete wheel"

# 6. A PATH with no Node: everything in /usr/bin (which /bin links to) except node and its package managers.
mkdir "$WORK/bin"
for tool in /usr/bin/*; do
    case "$(basename "$tool")" in node | nodejs | npm | npx | corepack | yarn | yarnpkg | pnpm) continue ;; esac
    ln -s "$tool" "$WORK/bin/"
done
VENV="$WORK/venv"
user() {  # runs a command as a user's machine would: the fresh venv first on PATH, no Node, no dev venv
    env -u PYTHONPATH -u VIRTUAL_ENV PATH="$VENV/bin:$WORK/bin" CI=1 "$@"
}
user bash -c '! command -v node && ! command -v npm' >/dev/null || { echo "node is still on PATH"; exit 1; }

# 7. The user's venv: the wheel without extras, plus what running it in JupyterLab needs, plus the test tools
#    (Playwright's Python package only: the browser is Debian's /usr/bin/chromium).
user "$PY" -m venv "$VENV"
# --no-compile: byte-compiling all of torch costs minutes here; Python compiles what it imports anyway.
# shellcheck disable=SC2086  # TORCH_PACKAGES is a list of requirements
user "$VENV/bin/python" -m pip install --quiet --no-compile $TORCH_PACKAGES "$WHEEL" jupyterlab ipykernel pytest playwright \
    >"$WORK/pip.log" 2>&1 || { grep -v "^WARNING: Location" "$WORK/pip.log" | tail -40; exit 1; }
user "$VENV/bin/python" - <<'EOF'
import importlib.util
dev_only = [name for name in ("sklearn", "ruff", "captum", "ace") if importlib.util.find_spec(name)]
assert not dev_only, f"dev extras leaked into the user's venv: {dev_only}"
EOF
phase "fresh venv with the wheel, torch, jupyterlab, ipykernel, pytest, playwright"

# 8. The end-to-end test, from a copy of tests/e2e outside the repository (pytest would put the repository's
#    root on sys.path, and the kernel could import the checkout instead of the wheel).
mkdir -p "$WORK/e2e/tests"
cp -r "$WORK/src/tests/e2e" "$WORK/e2e/tests/"
touch "$WORK/e2e/tests/__init__.py"
printf '[pytest]\naddopts = -ra\nmarkers =\n    e2e: end to end\n    slow: slow\n' >"$WORK/e2e/pytest.ini"
status=0
(cd "$WORK/e2e" && user NEURONWIDGETS_INSTALLED_CHECK=1 "$VENV/bin/python" -m pytest -q -s -p no:cacheprovider \
    tests/e2e/test_installed.py 2>&1 | tee "$WORK/e2e.log") || status=$?
mkdir -p "$ROOT/test-artifacts/installed"
cp -r "$WORK/e2e/test-artifacts/." "$ROOT/test-artifacts/installed/" 2>/dev/null || true
cp "$WORK"/*.log "$ROOT/test-artifacts/installed/"
# a skipped test exits 0 too: insist that it ran
if [[ $status != 0 ]] || ! grep -q "1 passed" "$WORK/e2e.log"; then
    echo "the installed wheel failed in JupyterLab (logs: test-artifacts/installed/)"
    exit 1
fi
phase "the Explorer renders in JupyterLab from the installed wheel"
echo "[check-install] passed in ${SECONDS}s"

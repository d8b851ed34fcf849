"""Dependencies QGIS's Python may lack (onnxruntime, faiss, threadpoolctl), and how to install them safely.

The plugin always loads; when something is missing it says what, and offers to install it into
a folder outside the plugin folder (a plugin update wipes that) that belongs to this Python
interpreter only (``<QGIS profile>/python/dependencies/rs_text_search/<python tag>``). The
install runs pip of the interpreter QGIS embeds (found from ``sys.base_exec_prefix``, never from
``PATH``, where a pyenv shim or another Python resolves against other site-packages), with binary
wheels only, pinned versions that work with the numpy QGIS already has, and ``--no-deps``, so
pip never copies numpy or anything else QGIS has into the folder. The exact command is shown
before it runs, and "installed" means an import succeeded in a fresh interpreter afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from qgis.core import QgsApplication

__all__ = ["REQUIRED", "missing_modules", "missing_sentence", "dependency_dir", "activate", "python_executable",
           "pinned_requirements", "install_command", "interpreter_problem", "verify_import", "command_text"]

# import name -> pip distribution name
REQUIRED = {"onnxruntime": "onnxruntime", "faiss": "faiss-cpu", "threadpoolctl": "threadpoolctl"}
# Imported by those packages at import time (faiss's loader) and installed only when QGIS lacks them.
IMPORT_TIME_DEPENDENCIES = {"packaging": "packaging==24.2"}
# The newest onnxruntime with wheels for each Python (3.11 and later: 1.32.0, the engine's version).
ONNXRUNTIME_BY_PYTHON = {(3, 9): "1.19.2", (3, 10): "1.23.2"}
# faiss-cpu from 1.9 needs numpy >= 1.25 (its loader imports numpy._core); 1.8.0 works with numpy 1.24
# (Debian 12's QGIS 3.22: numpy 1.24.2, checked by indexing and searching through qgis_process).
FAISS_FOR_OLD_NUMPY, FAISS = "1.8.0", "1.15.1"
THREADPOOLCTL = "3.8.0"
VERIFY_TIMEOUT_S = 120


def python_tag() -> str:
    """``cp311-linux_x86_64``-style tag: a folder per interpreter and platform."""
    implementation = sys.implementation.name[:2] if sys.implementation.name != "cpython" else "cp"
    return f"{implementation}{sys.version_info.major}{sys.version_info.minor}-" \
           f"{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"


def dependency_dir(settings_dir: str | None = None) -> Path:
    """Where missing packages go: in the QGIS profile, outside every plugin folder."""
    base = Path(settings_dir or QgsApplication.qgisSettingsDirPath())
    return base / "python" / "dependencies" / "rs_text_search" / python_tag()


def activate(folder: Path | None = None) -> bool:
    """Append the dependency folder to ``sys.path`` (after QGIS's own packages); True if it exists."""
    folder = folder or dependency_dir()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
    return folder.is_dir()


def missing_modules() -> list[str]:
    """Import names of required modules that cannot be found (no import: fast enough for start-up)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def missing_sentence(missing: list[str]) -> str:
    """'faiss is missing', 'onnxruntime and faiss are missing', 'a, b and c are missing' (from QGIS's Python)."""
    names = list(missing)
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{listed} {'is' if len(names) == 1 else 'are'} missing from QGIS's Python"


def python_executable() -> str:
    """The Python interpreter QGIS embeds (``sys.executable`` is the QGIS binary, or whatever PATH gave)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_exec_prefix)
    if platform.system() == "Windows":  # OSGeo4W and the standalone installer: apps/Python3x/python.exe
        candidates = [prefix / "python.exe", prefix / "python3.exe"]
    else:  # Linux packages (/usr/bin/python3.x), macOS bundles (Python.framework/.../bin/python3.x)
        candidates = [prefix / "bin" / f"python{version}", prefix / "bin" / "python3"]
    base = Path(getattr(sys, "_base_executable", "") or "")
    if base.name.lower().startswith("python"):
        candidates.append(base)
    return str(next((c for c in candidates if c.is_file()), candidates[0]))


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = (version.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def numpy_version() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def pinned_requirements(modules: list[str], numpy: str | None = None,
                        python: tuple[int, int] | None = None) -> list[str]:
    """``name==version`` for each import name, chosen for QGIS's numpy and Python."""
    numpy = numpy if numpy is not None else (numpy_version() or "1.26")
    python = python or sys.version_info[:2]
    faiss = FAISS_FOR_OLD_NUMPY if _version_tuple(numpy) < (1, 25) else FAISS
    versions = {"onnxruntime": ONNXRUNTIME_BY_PYTHON.get(tuple(python), "1.32.0"), "faiss": faiss,
                "threadpoolctl": THREADPOOLCTL}
    return [f"{REQUIRED[m]}=={versions[m]}" for m in modules if m in REQUIRED]


def install_command(modules: list[str], folder: Path | None = None) -> list[str]:
    """The exact pip command that installs ``modules`` (import names) for the embedded interpreter."""
    folder = folder or dependency_dir()
    extra = [pin for name, pin in IMPORT_TIME_DEPENDENCIES.items() if importlib.util.find_spec(name) is None]
    return [python_executable(), "-m", "pip", "install", "--only-binary=:all:", "--no-deps", "--upgrade",
            "--target", str(folder), *pinned_requirements(modules), *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return subprocess.run(command, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S, env=env)


def interpreter_problem(python: str | None = None) -> str | None:
    """One sentence when ``python`` is not QGIS's own interpreter or has no pip; None when it can install."""
    python = python or python_executable()
    probe = "import sys; print(sys.version_info[0], sys.version_info[1], sys.base_prefix)"
    try:
        seen = _run([python, "-c", probe])
    except (OSError, subprocess.SubprocessError):
        return f"QGIS's Python interpreter was not found at '{python}'; run the command in a terminal instead."
    expected = f"{sys.version_info[0]} {sys.version_info[1]} {sys.base_prefix}"
    if seen.returncode != 0 or seen.stdout.strip() != expected:
        return f"'{python}' is not the Python QGIS runs ({sys.version.split()[0]} in {sys.base_prefix}); " \
               "run the command with QGIS's own Python instead."
    if _run([python, "-m", "pip", "--version"]).returncode != 0:
        return "QGIS's Python has no pip; install it first (Debian/Ubuntu: the python3-pip package)."
    return None


def verify_import(modules: list[str], folder: Path | None = None, python: str | None = None) -> str | None:
    """Import ``modules`` in a fresh embedded interpreter with ``folder`` on its path; the error or None."""
    folder = folder or dependency_dir()
    code = f"import sys; sys.path.append({str(folder)!r}); " + "; ".join(f"import {m}" for m in modules)
    try:
        done = _run([python or python_executable(), "-c", code])
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def command_text(command: list[str]) -> str:
    """The command as one line a user can copy into a terminal."""
    if os.name == "nt":
        return " ".join(f'"{part}"' if " " in part else part for part in command)
    return " ".join(shlex.quote(part) for part in command)

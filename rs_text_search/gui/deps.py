"""Dependencies QGIS's Python may lack (onnxruntime, faiss, threadpoolctl), and how to install them safely.

The plugin always loads; when something is missing it says what, and offers to install it into
a folder outside the plugin folder (a plugin update wipes that) that belongs to this Python
interpreter only (``<QGIS profile>/python/dependencies/rs_text_search/<python tag>``). The
install is pip with binary wheels only, constrained to the numpy QGIS already uses, so nothing
is compiled and QGIS's own numpy is never replaced. The exact command is shown before it runs.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from qgis.core import QgsApplication

__all__ = ["REQUIRED", "missing_modules", "missing_sentence", "dependency_dir", "activate", "python_executable",
           "install_command", "prepare_install", "command_text"]

# import name -> pip distribution name
REQUIRED = {"onnxruntime": "onnxruntime", "faiss": "faiss-cpu", "threadpoolctl": "threadpoolctl"}


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
    """Import names of required modules that cannot be found (no import is attempted: it is fast)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def missing_sentence(missing: list[str]) -> str:
    """'faiss is missing', 'onnxruntime and faiss are missing', 'a, b and c are missing' (from QGIS's Python)."""
    names = list(missing)
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{listed} {'is' if len(names) == 1 else 'are'} missing from QGIS's Python"


def python_executable() -> str:
    """The Python interpreter QGIS runs (``sys.executable`` is the QGIS binary on most platforms)."""
    executable = Path(sys.executable)
    if executable.name.lower().startswith("python"):
        return str(executable)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if platform.system() == "Windows":
        candidate = Path(sys.exec_prefix) / "python.exe"  # OSGeo4W and the standalone installer
    elif platform.system() == "Darwin":
        candidate = Path(sys.exec_prefix) / "bin" / f"python{version}"
    else:
        candidate = Path(shutil.which(f"python{version}") or shutil.which("python3") or "python3")
    return str(candidate)


def numpy_version() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def install_command(modules: list[str], folder: Path | None = None) -> list[str]:
    """The exact pip command that installs ``modules`` (import names) for this interpreter."""
    folder = folder or dependency_dir()
    packages = [REQUIRED[m] for m in modules if m in REQUIRED]
    return [python_executable(), "-m", "pip", "install", "--only-binary=:all:", "--upgrade",
            "--target", str(folder), "--constraint", str(folder.parent / f"{folder.name}-constraints.txt"),
            *packages]


def prepare_install(modules: list[str], folder: Path | None = None) -> list[str]:
    """Write the constraints file next to the target folder and return the command to run."""
    folder = folder or dependency_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    constraints = folder.parent / f"{folder.name}-constraints.txt"
    version = numpy_version()
    constraints.write_text(f"numpy=={version}\n" if version else "", encoding="utf-8")
    return install_command(modules, folder)


def command_text(command: list[str]) -> str:
    """The command as one line a user can copy into a terminal."""
    if os.name == "nt":
        return " ".join(f'"{part}"' if " " in part else part for part in command)
    return " ".join(shlex.quote(part) for part in command)

"""The "Install missing dependencies" dialog: shows the exact pip command, runs it on request.

pip runs in a ``QProcess`` (QGIS stays responsive) and its output is shown as it comes. Nothing
is installed without the analyst pressing Install. Before, the interpreter is checked to be QGIS's
own and to have pip; after, the packages count as installed only when a fresh interpreter imports them.
"""

from __future__ import annotations

import logging

from qgis.PyQt.QtCore import QProcess
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from . import deps
from .meta import tr

__all__ = ["InstallDialog"]

log = logging.getLogger(__name__)


class InstallDialog(QDialog):
    def __init__(self, missing: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RsTextSearchInstall")
        self.setWindowTitle(tr("Install missing dependencies"))
        self.missing = list(missing)
        self.folder = deps.dependency_dir()
        self.command = deps.install_command(self.missing, self.folder)
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"RS Text Search needs <b>{', '.join(self.missing)}</b>, which QGIS's Python does not have.<br>"
            f"They can be installed into <tt>{self.folder}</tt> (outside the plugin folder, for this Python "
            "only) as ready-made wheels in versions that work with the numpy QGIS uses, without touching "
            "QGIS's own packages. This runs:")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.commandView = QPlainTextEdit(deps.command_text(self.command))
        self.commandView.setObjectName("commandView")
        self.commandView.setReadOnly(True)
        self.commandView.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.commandView.setMaximumHeight(90)
        layout.addWidget(self.commandView)
        self.outputView = QPlainTextEdit()
        self.outputView.setObjectName("outputView")
        self.outputView.setReadOnly(True)
        self.outputView.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.outputView.setPlaceholderText("pip's output appears here.")
        layout.addWidget(self.outputView, 1)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.installButton = self.buttons.addButton(tr("Install"), QDialogButtonBox.ButtonRole.AcceptRole)
        self.installButton.setObjectName("runInstallButton")
        self.installButton.clicked.connect(self.install)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.process: QProcess | None = None
        self.resize(640, 380)

    def install(self) -> None:
        if self.process is not None:
            return
        problem = deps.interpreter_problem(self.command[0])
        if problem:
            self.outputView.appendPlainText(problem)
            return
        command = self.command
        self.folder.mkdir(parents=True, exist_ok=True)
        self.installButton.setEnabled(False)
        self.outputView.appendPlainText("$ " + deps.command_text(command))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._failed_to_start)
        self.process.start(command[0], command[1:])

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", errors="replace")
        self.outputView.appendPlainText(text.rstrip())

    def _failed_to_start(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.outputView.appendPlainText(f"Could not start '{self.command[0]}'. Run the command above in a "
                                            "terminal (OSGeo4W Shell on Windows) instead.")
            self.installButton.setEnabled(True)
            self.process = None

    def _done(self, exit_code: int, _status) -> None:
        self.process = None
        if exit_code == 0:
            problem = deps.verify_import(self.missing, self.folder, self.command[0])
            if problem is None:
                deps.activate(self.folder)
                self.outputView.appendPlainText("Installed and checked by importing them. Restart QGIS to use "
                                                "the plugin.")
                log.info("dependencies installed into %s", self.folder)
            else:
                self.outputView.appendPlainText(f"pip finished, but importing them still fails: {problem}")
                self.installButton.setEnabled(True)
        else:
            self.outputView.appendPlainText(f"pip stopped with exit code {exit_code}; nothing was changed in QGIS.")
            self.installButton.setEnabled(True)

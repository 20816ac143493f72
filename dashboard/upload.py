"""Uploads that never sit in the server's memory whole.

:class:`StreamingDropper` is Panel's ``FileDropper`` (drag and drop, chunked transfer, a size
limit the browser enforces) with one change: each chunk is appended to a file in a staging
folder as it arrives, instead of being collected in memory and joined (which holds the file
twice). ``value`` then maps each uploaded name to the path of its finished file.
"""
from __future__ import annotations

import os
from pathlib import Path

import panel as pn
import param

from .state import safe_name


class StreamingDropper(pn.widgets.FileDropper):
    """``FileDropper`` whose ``value`` is ``{uploaded name: Path}`` of files written to
    ``folder``, each complete (renamed into place after its last chunk)."""

    folder = param.Parameter(default=None, doc="staging folder (a Path) for finished uploads")
    max_bytes = param.Integer(default=None, allow_None=True,
                              doc="refuse a file once it grows past this many bytes (the browser "
                                  "checks max_file_size first; this holds against any client)")
    refused = param.String(default="", doc="the last file refused for its size")

    _rename = {"value": None, "folder": None, "max_bytes": None, "refused": None}

    def _process_event(self, event):
        data = event.data
        name = data["name"]
        if event.event_name == "delete_event":
            if name in self.value:
                self.value = {k: v for k, v in self.value.items() if k != name}
            return
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / safe_name(name)
        part = final.with_name(f".{final.name}.part")
        if data["chunk"] != 1 and not part.exists():
            return  # a file already refused: its remaining chunks are dropped
        with open(part, "wb" if data["chunk"] == 1 else "ab") as f:
            f.write(data["data"])
            size = f.tell()
        if self.max_bytes is not None and size > self.max_bytes:
            part.unlink(missing_ok=True)
            self.refused = name
            return
        if data["chunk"] != data["total_chunks"]:
            return
        os.replace(part, final)
        self.mime_type = {**self.mime_type, name: data["type"]}
        self.value = {**self.value, name: final}

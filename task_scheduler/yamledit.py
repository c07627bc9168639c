"""Editing a jobs.yaml job from the GUI: where a job is defined (file:line), the file's state for
an edit form, and the edit itself: checked against the file as the form saw it, validated as the
whole file would be, written atomically, then applied by the same reload as any save. It owns
no YAML text handling (yamltext.py) and changes jobs only through ``JobsFile.reload``."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from .checks import parse_job
from .errors import InvalidConfig, InvalidJob, JobConflict
from .jobsfile import read_jobs_file
from .notify import restore_secrets
from .reload import _api_id_conflict
from .text import _clean
from .yamltext import entry_keys, entry_lines, export_entry, file_diff, locate, rewrite_entry

if TYPE_CHECKING:
    from .book import JobBook
    from .config import Config
    from .reload import JobsFile

log = logging.getLogger("task_scheduler")
KEEP_TEXTS = 8            # versions of the file kept to show what changed under an open form
KEEP_BYTES = 8 << 20      # ... and at most this much text in all


class FileChanged(JobConflict):
    """jobs.yaml changed since the edit form was loaded; ``diff`` says how (empty when the
    version the form saw is no longer known here), ``hash`` is the file's hash now."""

    code = "file_changed"

    def __init__(self, message: str, diff: str, digest: str):
        super().__init__(message, [{"field": "", "message": message}])
        self.diff, self.hash = diff, digest


class NotWritable(JobConflict):
    """jobs.yaml cannot be written here (read-only file or folder); nothing was changed."""

    code = "not_writable"


class JobsFileEditor:
    """Reads jobs.yaml for the edit form and writes one job's entry back. One edit at a time
    (``lock``): a second edit made from the same version of the file is refused as changed."""

    def __init__(self, config: Config, book: JobBook, jobs_file: JobsFile, *,
                 leading: Callable[[], bool]):
        self.config, self.book, self.jobs_file = config, book, jobs_file
        self._leading = leading
        self._texts: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lines: tuple[Optional[tuple], dict] = (None, {})
        self._parsing = threading.Lock()
        self.lock = threading.Lock()

    # reads

    def where(self, job_id: str) -> Optional[dict]:
        """``{"path", "line"}`` of a jobs.yaml job's entry (the path as configured), or None
        (not a jobs.yaml job, or no longer in the file)."""
        rec = self.book.get(job_id)
        path = self.config.config_path
        if rec is None or rec.source != "yaml" or not path:
            return None
        try:   # parsed once per version of the file, known by its stat: a job page reads
            info = os.stat(path)   # no file while it stays as it was
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            with self._parsing:   # by one reader: 8 clients at once parsed it 8 times
                if self._lines[0] != key:
                    self._lines = (key, entry_lines(read_jobs_file(
                        path, self.config.max_config_bytes)[0]))
        except (OSError, InvalidConfig):
            return None
        line = self._lines[1].get(job_id)
        return {"path": path, "line": line} if line else None

    def located(self, job: dict) -> dict:
        """``job`` (a dict of the API) with ``defined_at`` when it is a jobs.yaml job."""
        if job["source"] == "yaml":
            job["defined_at"] = self.where(job["id"])
        return job

    def located_json(self, job_id: str, text: str) -> str:
        """A job's JSON text (cached by the catalog) with ``defined_at`` added as ``located``."""
        rec = self.book.get(job_id)
        if rec is None or rec.source != "yaml":
            return text
        return f'{text[:-1]}, "defined_at": {json.dumps(self.where(job_id))}}}'

    def snapshot(self, job_id: str) -> dict:
        """What an edit form carries: ``{"path", "line", "hash"}`` of the file now (this
        version is kept, to show what changed should the file change before the form is
        sent)."""
        self._yaml_job(job_id)
        text, digest = self._read()
        self._remember(text, digest)
        lines = entry_lines(text)
        return {"path": self.config.config_path, "line": lines.get(job_id), "hash": digest}

    def export(self, job: dict) -> str:
        """A job (as the API shows it: secrets hidden) as a jobs.yaml entry."""
        notes = [f"job {job['id']} exported from task-scheduler"]
        where = job.get("defined_at")
        if where:
            notes.append(f"defined at {where['path']}:{where['line']}")
        if any("(hidden)" in str(t) for t in job["definition"].get("notify") or []):
            notes.append("notify secrets are hidden: write them in before using this entry")
        return export_entry(job["definition"], notes)

    # the edit

    def edit(self, job_id: str, definition: dict, base_hash: str) -> dict:
        """Write ``definition`` as the entry of jobs.yaml job ``job_id`` and apply the file.
        Refused, with nothing written: InvalidJob (field errors, or the file would not
        validate), FileChanged (the file is not the version ``base_hash`` names), NotWritable,
        JobConflict (not a jobs.yaml job; this node does not lead). Returns ``{"path", "line",
        "hash", "changed", "applied", "error"}``."""
        rec = self._yaml_job(job_id)
        if not self._leading():
            raise JobConflict("this node follows: the leader applies its own jobs.yaml; make "
                              "the edit on the leader's GUI")
        if isinstance(definition, dict) and "notify" in definition:
            definition = {**definition, "notify": restore_secrets(definition["notify"],
                                                                  rec.definition.notify)}
        definition = {**definition, "id": job_id}
        path = self.config.config_path
        wanted = parse_job(definition, self.config.base_dir).dump()   # field errors first
        with self.lock:
            text, digest = self._read()
            if digest != base_hash:
                self._remember(text, digest)
                old = self._texts.get(base_hash)
                raise FileChanged(f"{path} changed since the page was loaded; nothing was "
                                  f"written", file_diff(old, text, path) if old else "", digest)
            entry = locate(text, job_id)
            new_text = rewrite_entry(text, entry, entry_keys(wanted, entry))
            changed = new_text != text
            if changed:
                self._check(new_text, path, job_id, wanted)
                self._write(path, new_text)
                digest = self._remember(new_text, None)
        result = {"path": path, "line": entry_lines(new_text).get(job_id), "hash": digest,
                  "changed": changed, "applied": True, "error": None}
        if changed:
            log.info("jobs.yaml: job %s written from the GUI (%s)", job_id, path)
            try:
                self.jobs_file.reload()   # the same path as any save (the watcher then skips it)
            except InvalidConfig as exc:
                result.update(applied=False, error=str(exc))
        return result

    def _yaml_job(self, job_id: str):
        rec = self.book.require(job_id)
        if rec.source != "yaml" or not self.config.config_path:
            raise JobConflict(f"job {job_id!r} was created through the API, not in jobs.yaml: "
                              f"change it with PUT /api/jobs/{job_id} or its edit form")
        return rec

    def _read(self) -> tuple[str, str]:
        return read_jobs_file(self.config.config_path, self.config.max_config_bytes)

    def _remember(self, text: str, digest: Optional[str]) -> str:
        if digest is None:
            digest = _sha256(text)
        self._texts[digest] = text
        self._texts.move_to_end(digest)
        while len(self._texts) > KEEP_TEXTS or (
                len(self._texts) > 1 and sum(map(len, self._texts.values())) > KEEP_BYTES):
            self._texts.popitem(last=False)
        return digest

    def _check(self, new_text: str, path: str, job_id: str, wanted: dict) -> None:
        """The whole new file must validate, with the edited job read back as wanted and no id
        taken by an API job; else nothing is written."""
        try:
            jobs = self.jobs_file.validate(new_text, path)
        except InvalidConfig as exc:   # this job's errors go next to its fields
            details = [d if d.get("job") == job_id else {
                **d, "field": "", "message": f"{path}:{d.get('line')}: {d.get('job')}: "
                                             f"{d.get('field')}: {d['message']}"}
                for d in exc.details]
            raise InvalidJob(f"the file would not validate, nothing was written:\n{exc}",
                             details) from None
        conflict = _api_id_conflict(self.book.records, path, jobs)
        if conflict is not None:
            raise InvalidJob(str(conflict), conflict.details)
        mine = next(j for j in jobs if j.id == job_id)
        full = parse_job(wanted, self.config.base_dir).model_dump(mode="json")
        if mine.model_dump(mode="json") != full:
            raise JobConflict(f"job {job_id!r} would not read back as entered from {path}; "
                              f"nothing was written: edit the file by hand")

    def _write(self, path: str, text: str) -> None:
        """Replace the file atomically (a temp file in its folder, then rename), keeping its
        mode; the real file when ``path`` is a symlink. NotWritable when it is read-only."""
        real = os.path.realpath(path)
        try:
            info = os.stat(real)
            if not info.st_mode & 0o222:
                raise PermissionError(13, "the file is read-only")
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".tmp",
                                       dir=os.path.dirname(real))
        except OSError as exc:
            raise NotWritable(f"cannot write {path}: {exc.strerror or _clean(exc)}; nothing "
                              f"was changed (make the file writable by the service, or edit "
                              f"it where it is kept)") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, stat.S_IMODE(info.st_mode))
            os.replace(tmp, real)
        except OSError as exc:
            _remove(tmp)
            raise NotWritable(f"cannot write {path}: {exc.strerror or _clean(exc)}; nothing "
                              f"was changed") from None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, _clean(exc))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

"""Where commands write: an output folder (`run --out`, `export --out`) or file (`score --json`,
`--plot`, `--audit`) is checked before any work starts, so a bad path fails in one line instead
of after the corpus is generated or scored.

A path passes when it is (or can be created as) a folder, resp. a file, in a writable place,
and lies outside every input of the command (an export written into its source run, a report
into the scored folder, an output that would replace an input file)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from generator.errors import UserError


def check_out_dir(path: str | Path, role: str, *, inputs: Iterable[str | Path] = ()) -> None:
    """`path` is a writable folder, or can be created as one; `role` names it (e.g. "--out")."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"{role} {path}: a link to nothing", fix=f"remove the link or choose another {role}")
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{role} {path}: is a file, not a folder", fix=f"choose a folder for {role}")
        if not os.access(path, os.W_OK | os.X_OK) or not _can_create_in(path):
            raise UserError(f"{role} {path}: folder is not writable",
                            fix=f"choose a {role} folder you can write to, or change its permissions")
    else:
        _check_creatable(path, role)
    _check_outside(path, role, inputs)


def check_out_file(path: str | Path, role: str, *, inputs: Iterable[str | Path] = ()) -> None:
    """`path` is a file that can be written (replaced if it exists); `role` names it (e.g. "--json")."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{role} {path}: is a folder, not a file",
                        fix=f"give {role} a file name, e.g. {path / 'out'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{role} {path}: file is not writable", fix=f"choose another {role} file")
    if not path.exists():
        _check_creatable(path, role)
    _check_outside(path, role, inputs)


def _check_creatable(path: Path, role: str) -> None:
    """The nearest existing folder above `path` is a folder in which entries can be created."""
    absolute = Path(os.path.abspath(path))
    for parent in absolute.parents:
        if not parent.exists():
            if parent.is_symlink():
                raise UserError(f"{role} {path}: {parent} is a link to nothing",
                                fix=f"remove the link or choose another {role}")
            continue
        if not parent.is_dir():
            raise UserError(f"{role} {path}: {parent} is a file, so nothing can be created under it",
                            fix=f"choose a {role} outside {parent}")
        if not os.access(parent, os.W_OK | os.X_OK) or not _can_create_in(parent):
            raise UserError(f"{role} {path}: cannot be created, {parent} is not writable",
                            fix=f"choose a {role} in a folder you can write to")
        return


def _can_create_in(folder: Path) -> bool:
    """Whether an entry can be made in `folder`: a probe folder is created and removed again
    (permissions alone do not tell: /proc, a read-only mount, a full quota)."""
    try:
        probe = tempfile.mkdtemp(prefix=".generator-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def _check_outside(path: Path, role: str, inputs: Iterable[str | Path]) -> None:
    out = path.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if out == source:
            raise UserError(f"{role} {path}: is the input {given} itself, which writing would replace",
                            fix=f"choose a {role} outside the inputs")
        if source.is_dir() and out.is_relative_to(source):
            raise UserError(f"{role} {path}: lies inside the input {given}, which writing would change",
                            fix=f"choose a {role} outside {given}")

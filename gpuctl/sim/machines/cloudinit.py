"""Lambda user data read the way cloud-init reads it (semantics of cloud-init 22.4, Debian 12).

Lambda documents `user_data` as "cloud-init user-data format", plain text, at most
1 MB (the spec's `LaunchRequest.user_data`). What cloud-init does with it:

- The type comes from the first characters, case-insensitive after leading
  whitespace (`handlers.type_from_starts_with`, longest prefix first):
  `#cloud-config` is YAML configuration, `#!` a script run at the end of the
  first boot. `#include`, `#cloud-boothook`, `#part-handler`,
  `#cloud-config-archive`, `#cloud-config-jsonp`, `## template: jinja` and MIME
  multi-part are real cloud-init formats the simulator does not run (the reason
  is recorded). Anything else is `text/x-not-multipart`: cloud-init ignores it.
- cloud-config YAML is read with `yaml.safe_load`; YAML that does not parse, or
  whose top level is not a map, configures nothing.
- `bootcmd` (init stage, every boot) and `runcmd` (written in the config stage,
  run by `scripts_user` in the final stage of the first boot) are "shellified":
  `#!/bin/sh`, then a list item as its single-quoted words (an argv, as
  `execve` would get it), a string item as a line of its own, `None` (a YAML
  comment) skipped, anything else a TypeError that fails the module.
- `write_files` (init stage; `defer: true` entries in the final stage, before
  the scripts): `path` (required, made absolute), `content`, `encoding`
  (`b64`/`base64`, `gz`/`gzip`, `gz+b64` and variants, `text/plain`; unknown:
  text), `permissions` (octal string or YAML int; default 0644; undecodable:
  the default), `owner` (default `root:root`), `append`. An entry without
  `path` is skipped; a content that cannot be decoded fails the module (files
  before it are written).

tests/unit/test_sim_cloudinit.py checks gpuctl's user data with `cloud-init schema`
and this module's shellify against cloud-init's own (Debian's `cloud-init` package).
"""

from __future__ import annotations

import base64
import binascii
import enum
import gzip
import posixpath
import zlib
from collections.abc import Sequence
from typing import Any

import attrs
import yaml

DEFAULT_PERMISSIONS = 0o644
DEFAULT_OWNER = "root:root"

# Prefixes cloud-init recognises, longest first (handlers.INCLUSION_TYPES_MAP).
_SCRIPT = "#!"
_CLOUD_CONFIG = "#cloud-config"
_NOT_SIMULATED = (
    "#cloud-config-archive",
    "#cloud-config-jsonp",
    "## template: jinja",
    "#cloud-boothook",
    "#include-once",
    "#part-handler",
    "#include",
)
_TRUE = frozenset({"true", "1", "on", "yes"})  # util.TRUE_STRINGS


class Kind(enum.StrEnum):
    EMPTY = "empty"  # no user data at all
    CLOUD_CONFIG = "cloud-config"
    SCRIPT = "script"
    NOT_SIMULATED = "not-simulated"  # a real cloud-init format the simulator does not run
    IGNORED = "ignored"  # cloud-init itself does nothing with it
    INVALID = "invalid"  # cloud-config that configures nothing (YAML error, not a map)


@attrs.frozen
class WriteFile:
    path: str
    content: bytes
    permissions: int = DEFAULT_PERMISSIONS
    owner: str = DEFAULT_OWNER
    append: bool = False
    defer: bool = False


@attrs.frozen
class CloudConfig:
    """The modules the simulator runs; `problems` are what cloud-init would log as failures."""

    bootcmd: str | None = None  # shellified, run with /bin/sh at every boot
    write_files: tuple[WriteFile, ...] = ()
    runcmd: str | None = None  # shellified, /var/lib/cloud/instance/scripts/runcmd
    problems: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()  # modules the simulator does not run


@attrs.frozen
class UserData:
    kind: Kind
    detail: str = ""  # why nothing runs (EMPTY, NOT_SIMULATED, IGNORED, INVALID)
    config: CloudConfig | None = None
    script: bytes | None = None


# Keys the simulator runs; every other top-level key is reported, not run.
RUN_KEYS = ("bootcmd", "write_files", "runcmd")


def detect(text: str) -> str | None:
    """The cloud-init type prefix `text` starts with, if any."""
    head = text.lstrip().lower()
    if "mime-version:" in text[:4096].lower():
        return "mime-multipart"
    for prefix in (*_NOT_SIMULATED, _CLOUD_CONFIG, _SCRIPT):
        if head.startswith(prefix):
            return prefix
    return None


def parse(text: str) -> UserData:
    """Read user data as cloud-init would on the first boot."""
    if not text.strip():
        return UserData(Kind.EMPTY, "no user data: cloud-init has nothing to run")
    prefix = detect(text)
    if prefix == _SCRIPT:
        return UserData(Kind.SCRIPT, script=text.encode())
    if prefix == _CLOUD_CONFIG:
        return _parse_cloud_config(text)
    if prefix is not None:
        return UserData(
            Kind.NOT_SIMULATED,
            f"user data of type {prefix!r} is real cloud-init input the simulator does not run",
        )
    first = text.lstrip().splitlines()[0][:40]
    return UserData(
        Kind.IGNORED,
        f"user data starts with {first!r}, neither '#cloud-config' nor '#!': cloud-init "
        "treats it as text/x-not-multipart and runs nothing",
    )


def _parse_cloud_config(text: str) -> UserData:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return UserData(Kind.INVALID, f"cloud-config is not valid YAML: {error}")
    if document is None:
        document = {}
    if not isinstance(document, dict):
        kind = type(document).__name__
        return UserData(
            Kind.INVALID, f"cloud-config must be a YAML map, got {kind}: cloud-init ignores it"
        )
    problems: list[str] = []
    bootcmd = _shellify_module(document, "bootcmd", problems)
    runcmd = _shellify_module(document, "runcmd", problems)
    files = _write_files(document.get("write_files", []), problems)
    ignored = tuple(sorted(str(k) for k in document if k not in RUN_KEYS))
    config = CloudConfig(bootcmd, files, runcmd, tuple(problems), ignored)
    return UserData(Kind.CLOUD_CONFIG, config=config)


def shellify(commands: Any) -> str:
    """cloud-init's util.shellify: a `#!/bin/sh` script from a list of commands."""
    if not isinstance(commands, list | tuple):
        raise TypeError(
            f"Input to shellify was type '{type(commands).__name__}'. Expected list or tuple."
        )
    lines = ["#!/bin/sh\n"]
    for item in commands:
        if isinstance(item, list | tuple):
            lines.append(" ".join("'{}'".format(str(a).replace("'", "'\\''")) for a in item) + "\n")
        elif isinstance(item, str):
            lines.append(item + "\n")
        elif item is None:
            continue
        else:
            raise TypeError(
                f"Unable to shellify type '{type(item).__name__}'. "
                f"Expected list, string, tuple. Got: {item}"
            )
    return "".join(lines)


def _shellify_module(document: dict[str, Any], key: str, problems: list[str]) -> str | None:
    if key not in document:
        return None
    try:
        return shellify(document[key])
    except TypeError as error:
        problems.append(f"{key}: {error}")
        return None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE if value is not None else False


def _permissions(value: Any) -> int:
    """cc_write_files.decode_perms."""
    if value is None:
        return DEFAULT_PERMISSIONS
    try:
        if isinstance(value, int | float):
            return int(value)
        return int(str(value), 8)
    except (TypeError, ValueError):
        return DEFAULT_PERMISSIONS


def _decode(content: Any, encoding: Any) -> bytes:
    """cc_write_files.extract_contents, after canonicalize_extraction."""
    kind = str(encoding or "").strip().lower()
    if isinstance(content, bytes):
        data = content
    elif isinstance(content, str):
        data = content.encode()
    else:
        raise TypeError(f"content must be text or binary, got {type(content).__name__}")
    if kind in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64", "b64", "base64"):
        data = base64.b64decode(data)
    if kind.startswith(("gz", "gzip")):
        data = gzip.decompress(data)
    return data


def _write_files(entries: Any, problems: list[str]) -> tuple[WriteFile, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        problems.append(f"write_files: expected a list, got {type(entries).__name__}")
        return ()
    files: list[WriteFile] = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            problems.append(f"write_files entry {index}: expected a map")
            break
        path = entry.get("path")
        if not path:
            continue  # cloud-init warns and skips it
        try:
            content = _decode(entry.get("content", ""), entry.get("encoding"))
        except (TypeError, ValueError, binascii.Error, OSError, EOFError, zlib.error) as error:
            problems.append(f"write_files {path}: cannot decode content: {error}")
            break
        files.append(
            WriteFile(
                path=posixpath.normpath(posixpath.join("/", str(path))),
                content=content,
                permissions=_permissions(entry.get("permissions")),
                owner=str(entry.get("owner") or DEFAULT_OWNER),
                append=_truthy(entry.get("append", False)),
                defer=_truthy(entry.get("defer", False)),
            )
        )
    return tuple(files)


def describe(config: CloudConfig) -> Sequence[str]:
    """One line per module the simulator runs, for the console."""
    lines = []
    if config.bootcmd is not None:
        lines.append("bootcmd")
    if config.write_files:
        lines.append(f"write_files: {', '.join(f.path for f in config.write_files)}")
    if config.runcmd is not None:
        lines.append("runcmd")
    if config.ignored_keys:
        lines.append(f"not simulated: {', '.join(config.ignored_keys)}")
    return lines

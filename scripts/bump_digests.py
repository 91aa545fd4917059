#!/usr/bin/env python3
"""Set image digests (and optionally tags) in environments/*.yaml, keeping comments and layout.

    scripts/bump_digests.py [--only dev,staging] agent=sha256:<64 hex> web=0.4.0@sha256:<64 hex>

Each ``NAME=[TAG@]sha256:HEX`` rewrites ``images.NAME.digest`` (and ``.tag``) in
every environment file that has ``images.NAME``. The edit is line-based: only
the value of the ``digest:``/``tag:`` line changes (or one ``digest:`` line is
inserted under the image), so comments, key order and quoting of everything
else stay as they are. The result is parsed again and must differ from the
original in exactly those fields.

Exit codes: 0 done (``--check``: nothing to change), 1 ``--check`` found changes,
2 bad usage (malformed pair, an image no file has, a file it cannot edit safely).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
_PAIR = re.compile(
    r"^(?P<name>[a-z][a-z0-9-]*)=(?:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})@)?"
    r"(?P<digest>sha256:[a-f0-9]{64})$"
)
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?P<rest>.*)$")


class BumpError(Exception):
    """The file cannot be edited safely; one line naming file and reason."""


@dataclass(frozen=True)
class Bump:
    name: str
    digest: str
    tag: str | None = None


def parse_pair(text: str) -> Bump:
    match = _PAIR.match(text)
    if not match:
        raise BumpError(f"{text!r}: expected NAME=sha256:<64 hex> or NAME=TAG@sha256:<64 hex>")
    return Bump(name=match["name"], digest=match["digest"], tag=match["tag"])


def _comment(rest: str) -> str:
    """The trailing ``  # comment`` of a value, kept as written (a `#` inside a value has no space before it)."""
    match = re.search(r"\s+#.*$", rest)
    return match.group(0) if match else ""


def _scalar(tag: str) -> str:
    """The tag as written in YAML: plain when it reads back as the same string (0.3.0), else quoted (1.0)."""
    return tag if yaml.safe_load(tag) == tag else f'"{tag}"'


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the last line that belongs to the block whose key is at ``start`` (key indent ``indent``)."""
    end = start + 1
    last = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#"):
            if len(lines[end]) - len(lines[end].lstrip(" ")) <= indent:
                break
            last = end + 1
        end += 1
    return last


def _find_key(lines: list[str], start: int, stop: int, key: str, indent: int | None) -> int | None:
    """Line index of ``key:`` at the shallowest indent inside ``[start, stop)`` (or at ``indent``)."""
    child_indent = indent
    for i in range(start, stop):
        match = _KEY.match(lines[i])
        if not match:
            continue
        level = len(match["indent"])
        if child_indent is None:
            child_indent = level
        if level == child_indent and match["key"] == key:
            return i
    return None


def _edit_flow(line: str, bump: Bump, where: str) -> str:
    """``agent: {repository: r, tag: t, digest: d}`` on one line."""
    match = re.match(r"^(?P<head>.*?\{)(?P<body>[^{}]*)(?P<tail>\}.*)$", line)
    if not match:
        raise BumpError(f"{where}: cannot edit a multi-line flow mapping")
    items = [item.strip() for item in match["body"].split(",") if item.strip()]
    fields = {item.split(":", 1)[0].strip(): i for i, item in enumerate(items)}
    if "digest" in fields:
        items[fields["digest"]] = f"digest: {bump.digest}"
    else:
        items.append(f"digest: {bump.digest}")
    if bump.tag is not None:
        if "tag" not in fields:
            raise BumpError(f"{where}: no tag field to update")
        items[fields["tag"]] = f"tag: {_scalar(bump.tag)}"
    return f"{match['head']}{', '.join(items)}{match['tail']}"


def _set_value(line: str, value: str) -> str:
    match = _KEY.match(line)
    assert match is not None
    return f"{match['indent']}{match['key']}: {value}{_comment(match['rest'])}"


def apply(text: str, bumps: list[Bump], source: str = "<text>") -> tuple[str, list[str]]:
    """Return the edited text and the names of the images it changed."""
    lines = text.split("\n")
    images = _find_key(lines, 0, len(lines), "images", 0)
    if images is None:
        return text, []
    images_end = _block_end(lines, images, 0)
    touched: list[str] = []
    for bump in bumps:
        where = f"{source}: images.{bump.name}"
        line_no = _find_key(lines, images + 1, images_end, bump.name, None)
        if line_no is None:
            continue
        match = _KEY.match(lines[line_no])
        assert match is not None
        indent, rest = len(match["indent"]), match["rest"].strip()
        if rest.startswith("{"):
            lines[line_no] = _edit_flow(lines[line_no], bump, where)
        elif rest and not rest.startswith("#"):
            raise BumpError(f"{where}: expected a mapping, found {rest!r}")
        else:
            end = _block_end(lines, line_no, indent)
            digest = _find_key(lines, line_no + 1, end, "digest", None)
            tag = _find_key(lines, line_no + 1, end, "tag", None)
            if bump.tag is not None:
                if tag is None:
                    raise BumpError(f"{where}: no tag field to update")
                lines[tag] = _set_value(lines[tag], _scalar(bump.tag))
            if digest is not None:
                lines[digest] = _set_value(lines[digest], bump.digest)
            else:
                anchor = tag if tag is not None else _find_key(lines, line_no + 1, end, "repository", None)
                if anchor is None:
                    raise BumpError(f"{where}: neither tag nor repository to place the digest after")
                anchor_match = _KEY.match(lines[anchor])
                assert anchor_match is not None
                lines.insert(anchor + 1, f"{anchor_match['indent']}digest: {bump.digest}")
                images_end += 1
        touched.append(bump.name)
    edited = "\n".join(lines)
    _verify(text, edited, [b for b in bumps if b.name in touched], source)
    return edited, touched


def _verify(before: str, after: str, bumps: list[Bump], source: str) -> None:
    """The edit must change exactly the intended fields, nothing else."""
    old: Any = yaml.safe_load(before)
    new: Any = yaml.safe_load(after)
    expected = copy.deepcopy(old)
    for bump in bumps:
        image = expected["images"][bump.name]
        image["digest"] = bump.digest
        if bump.tag is not None:
            image["tag"] = bump.tag
    if new != expected:
        raise BumpError(f"{source}: the line edit changed more than images.*.digest/tag; edit it by hand")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", metavar="NAME=[TAG@]sha256:HEX")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    parser.add_argument(
        "--only",
        type=lambda v: [e for e in v.split(",") if e],
        metavar="ENV[,ENV...]",
        help="environment names to edit (default: all)",
    )
    parser.add_argument(
        "--skip-unknown", action="store_true", help="skip images no environment file has yet (default: an error)"
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)

    try:
        bumps = [parse_pair(p) for p in args.pairs]
        files = sorted(args.environments.glob("*.yaml"))
        if args.only:
            missing = sorted(set(args.only) - {f.stem for f in files})
            if missing:
                raise BumpError(f"no environment file for {', '.join(missing)}")
            files = [f for f in files if f.stem in args.only]
        found: set[str] = set()
        edits: dict[Path, str] = {}
        for path in files:
            text = path.read_text(encoding="utf-8")
            edited, touched = apply(text, bumps, source=str(path.name))
            found.update(touched)
            if edited != text:
                edits[path] = edited
        unknown = [b.name for b in bumps if b.name not in found]
        if unknown and args.skip_unknown:
            print(f"skipped (no environment has them): {', '.join(unknown)}")
        elif unknown:
            raise BumpError(f"no environment file has images.{', images.'.join(unknown)}")
    except BumpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    for path, edited in edits.items():
        print(f"{'would update' if args.check else 'updated'} {path.name}")
        if not args.check:
            path.write_text(edited, encoding="utf-8")
    if not edits:
        print("digests already up to date")
    return 1 if args.check and edits else 0


if __name__ == "__main__":
    sys.exit(main())

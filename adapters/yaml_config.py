"""Configuration files in YAML read into pydantic models: the authorization policy, the SLA
policies, the help-desk routing. One reader, so every file gets the same guarantees: a safe
loader that refuses duplicate keys, and a refusal that names each offending part of the file.
A deployment with a broken file fails at start-up with that message."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys: YAML would keep the last silently, and a second
    `admin:` further down a long file must not quietly replace the first."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def where(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as a path inside the file: `roles.admin.grants[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_model(text: str, source: str, model: type[M], error: type[ValueError], what: str, top: str) -> M:
    """YAML text -> `model`, or `error` naming each problem. `what` names the file's content in
    the message ("policy"), `top` the keys expected at the top ("version, permissions, ...")."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping at the top ({top})")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = str(err["msg"]).removeprefix("Value error, ")
            at = where(tuple(err["loc"]))
            problems.append(f"{at}: {msg}" if at else msg)
        raise error(f"{source}: invalid {what}: " + "; ".join(problems)) from exc


def read_text(path: str | None, packaged: str, error: type[ValueError], what: str) -> tuple[str, str]:
    """(text, source) of the file at `path`, or of `packaged` inside the `cluster` package when
    `path` is empty."""
    if not path:
        return resources.files("cluster").joinpath(packaged).read_text(encoding="utf-8"), f"cluster/{packaged}"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc}") from exc

"""Reading the authorization policy file (YAML) into a `Policy`, and the process's engine.

The packaged default is `cluster/policy/default.yaml`; `PITBOSS_POLICY_FILE` replaces it. A file
that does not parse or validate is refused with every offending part named (file, line or
path), so a deployment with a broken policy fails at start-up instead of denying or, worse,
allowing the wrong things.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adapters.settings import get_settings
from domain.policy import PolicyEngine
from schemas.policy import Policy

DEFAULT_POLICY = "policy/default.yaml"  # inside the `cluster` package


class PolicyFileError(ValueError):
    """The policy file cannot be read, parsed or validated; the message names the part."""


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


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """YAML text -> Policy, or PolicyFileError naming each problem."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyFileError(f"{source}: expected a mapping at the top (version, permissions, roles, ...)")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = str(err["msg"]).removeprefix("Value error, ")
            where = _where(tuple(err["loc"]))
            problems.append(f"{where}: {msg}" if where else msg)
        raise PolicyFileError(f"{source}: invalid policy: " + "; ".join(problems)) from exc


def load_policy(path: str | None = None) -> Policy:
    """The policy at `path`; else at `settings.policy_file` when set; else the packaged default."""
    path = path or get_settings().policy_file or None
    if path is None:
        source = resources.files("cluster").joinpath(DEFAULT_POLICY)
        return parse_policy(source.read_text(encoding="utf-8"), f"cluster/{DEFAULT_POLICY}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read the policy file: {exc}") from exc
    return parse_policy(text, path)


@lru_cache(maxsize=1)
def get_engine() -> PolicyEngine:
    """The process's engine over the configured policy (read once; restart to change it)."""
    return PolicyEngine(load_policy(get_settings().policy_file or None))

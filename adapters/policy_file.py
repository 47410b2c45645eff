"""Reading the authorization policy file (YAML) into a `Policy`, and the process's engine.

The packaged default is `cluster/policy/default.yaml`; `PITBOSS_POLICY_FILE` replaces it. A file
that does not parse or validate is refused with every offending part named (file, line or
path), so a deployment with a broken policy fails at start-up instead of denying or, worse,
allowing the wrong things.
"""

from __future__ import annotations

from functools import lru_cache

from adapters.settings import get_settings
from adapters.yaml_config import parse_model, read_text
from domain.policy import PolicyEngine
from schemas.policy import Policy

DEFAULT_POLICY = "policy/default.yaml"  # inside the `cluster` package


class PolicyFileError(ValueError):
    """The policy file cannot be read, parsed or validated; the message names the part."""


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """YAML text -> Policy, or PolicyFileError naming each problem."""
    return parse_model(text, source, Policy, PolicyFileError, "policy", "version, permissions, roles, ...")


def load_policy(path: str | None = None) -> Policy:
    """The policy at `path`; else at `settings.policy_file` when set; else the packaged default."""
    text, source = read_text(path or get_settings().policy_file, DEFAULT_POLICY, PolicyFileError, "policy file")
    return parse_policy(text, source)


@lru_cache(maxsize=1)
def get_engine() -> PolicyEngine:
    """The process's engine over the configured policy (read once; restart to change it)."""
    return PolicyEngine(load_policy(get_settings().policy_file or None))

"""Reading the help desk's SLA policies and business calendars (YAML) into an `SlaPolicySet`.

The packaged default is `cluster/helpdesk/sla.yaml`; `PITBOSS_HELPDESK_SLA_FILE` replaces it. A
file that cannot be read, parsed or validated is refused with every offending part named, so a
deployment with a broken SLA file fails at start-up instead of measuring tickets against the
wrong clock. The set is read once per process (restart, or redeploy, to change it).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from adapters.policy_file import _UniqueKeyLoader, _where
from adapters.settings import Settings
from schemas.helpdesk_sla import SlaPolicySet

DEFAULT_SLA = "helpdesk/sla.yaml"  # inside the `cluster` package


class SlaConfigError(ValueError):
    """The SLA file cannot be read, parsed or validated; the message names the part."""


def parse_sla_policies(text: str, source: str = "<sla>") -> SlaPolicySet:
    """YAML text -> SlaPolicySet, or SlaConfigError naming each problem (path inside the file)."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader refusing duplicate keys
    except yaml.YAMLError as exc:
        raise SlaConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SlaConfigError(f"{source}: expected a mapping at the top (policies, calendars, default_policy_id)")
    try:
        return SlaPolicySet.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = str(err["msg"]).removeprefix("Value error, ")
            where = _where(tuple(err["loc"]))
            problems.append(f"{where}: {msg}" if where else msg)
        raise SlaConfigError(f"{source}: invalid SLA policies: " + "; ".join(problems)) from exc


def load_sla_policies(settings: Settings) -> SlaPolicySet:
    """The policies of `settings.helpdesk_sla_file`, or the packaged default when it is empty."""
    return _load(settings.helpdesk_sla_file or "")


@lru_cache(maxsize=8)
def _load(path: str) -> SlaPolicySet:
    if not path:
        source = resources.files("cluster").joinpath(DEFAULT_SLA)
        return parse_sla_policies(source.read_text(encoding="utf-8"), f"cluster/{DEFAULT_SLA}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SlaConfigError(f"{path}: cannot read the SLA file (PITBOSS_HELPDESK_SLA_FILE): {exc}") from exc
    return parse_sla_policies(text, path)

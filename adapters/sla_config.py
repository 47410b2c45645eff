"""Reading the help desk's SLA policies and business calendars (YAML) into an `SlaPolicySet`.

The packaged default is `cluster/helpdesk/sla.yaml`; `PITBOSS_HELPDESK_SLA_FILE` replaces it. A
file that cannot be read, parsed or validated is refused with every offending part named, so a
deployment with a broken SLA file fails at start-up instead of measuring tickets against the
wrong clock. The set is read once per process (restart, or redeploy, to change it).
"""

from __future__ import annotations

from functools import lru_cache

from adapters.settings import Settings
from adapters.yaml_config import parse_model, read_text
from schemas.helpdesk_sla import SlaPolicySet

DEFAULT_SLA = "helpdesk/sla.yaml"  # inside the `cluster` package


class SlaConfigError(ValueError):
    """The SLA file cannot be read, parsed or validated; the message names the part."""


def parse_sla_policies(text: str, source: str = "<sla>") -> SlaPolicySet:
    """YAML text -> SlaPolicySet, or SlaConfigError naming each problem (path inside the file)."""
    return parse_model(text, source, SlaPolicySet, SlaConfigError, "SLA policies",
                       "policies, calendars, default_policy_id")


def load_sla_policies(settings: Settings) -> SlaPolicySet:
    """The policies of `settings.helpdesk_sla_file`, or the packaged default when it is empty."""
    return _load(settings.helpdesk_sla_file or "")


@lru_cache(maxsize=8)
def _load(path: str) -> SlaPolicySet:
    text, source = read_text(path, DEFAULT_SLA, SlaConfigError, "SLA file (PITBOSS_HELPDESK_SLA_FILE)")
    return parse_sla_policies(text, source)

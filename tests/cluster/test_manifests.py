"""Deployment files stay consistent: each RayService embeds its region's Serve config unchanged,
and every Serve app named in a config can be imported and bound."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from cluster.kuberay.__main__ import render

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIGS = sorted((ROOT / "cluster" / "serve").rglob("*.yaml"))


@pytest.mark.parametrize("region", ["eu", "us"])
def test_the_rayservice_embeds_the_regions_serve_config_unchanged(region: str) -> None:
    manifest_text = (ROOT / "cluster" / "kuberay" / f"rayservice-{region}.yaml").read_text()
    assert manifest_text == render(region), "run `python -m cluster.kuberay` after changing the Serve config"
    manifest = yaml.safe_load(manifest_text)
    embedded = manifest["spec"]["serveConfigV2"]
    assert embedded.strip() == (ROOT / "cluster" / "serve" / "regions" / f"{region}.yaml").read_text().strip()
    assert yaml.safe_load(embedded)["applications"]


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_every_serve_app_has_its_own_prefix_and_an_importable_builder(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    prefixes = [app["route_prefix"] for app in config["applications"] if app["route_prefix"] is not None]
    assert len(prefixes) == len(set(prefixes))
    for app in config["applications"]:
        # APIs are versioned; the dashboard's pages are not an API; the mail gateway speaks SMTP, not HTTP.
        prefix = app["route_prefix"]
        if prefix is None:
            assert app["name"] == "helpdesk-mail"
        else:
            assert prefix.endswith("/v1") or app["name"] == "dashboard"
        module, _, attr = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))

"""Helpers for ``rules/acquire_gee.smk`` (Snakemake rule files define no functions of their own)."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

from minescan.sources.gee.auth import resolve_auth
from minescan.sources.gee.composite import qa60_gap_warning
from minescan.sources.gee.settings import GeeSettings

log = logging.getLogger(__name__)


def rule_spec(config: dict, env=None) -> str:
    """Check the gee settings and credentials when the Snakefile is parsed, before any job is scheduled.

    Returns the settings as the JSON the ``tile_gee`` jobs get (``--spec``), with the credentials resolved
    here (project, key path, kind: never a secret), so jobs do not depend on the environment the
    workflow was started from. Raises ConfigError / GeeAuthError saying what to set.
    """
    settings = GeeSettings.from_config(config)
    auth = resolve_auth(settings, env)
    if settings.cloud_mask == "qa60":
        for period in config["periods"]:
            msg = qa60_gap_warning(period)
            if msg:
                print(f"minescan: warning: {msg}", file=sys.stderr)
    resolved = replace(settings, project=auth.project, credentials=auth.credentials,
                       service_account_key=auth.key_file if auth.credentials == "service_account" else None)
    return resolved.to_json()

"""Policies: what to protect, when, how consistently, how long to keep, whom to tell.

A policy file is TOML with one ``[[policy]]`` table per policy (docs/policies.md has
the format and a full example). :func:`load_policies` reads and checks a file and
:func:`parse_policies` text (:mod:`.loading`), returning :class:`Policy` objects
(:mod:`.model`). Checking happens in two passes over the whole file, so that every
problem is reported at once: Pydantic models (:mod:`.schema`, built of the checked
value types of :mod:`.values`) check each value's type and form, then the rules
between keys are checked on whatever values were well formed (:mod:`.problems`).
Each problem names the file, the line of its key (:mod:`.toml_lines`) and the
policy.
"""

from __future__ import annotations

from stasis.service.policy.loading import check_text, load_policies, parse_policies
from stasis.service.policy.model import (
    EVENTS,
    CopyTarget,
    DrillConfig,
    EmailTarget,
    Members,
    NotifyConfig,
    Policy,
    Retention,
)
from stasis.service.policy.problems import Problem
from stasis.service.policy.toml_lines import key_lines

__all__ = [
    "EVENTS", "CopyTarget", "DrillConfig", "EmailTarget", "Members", "NotifyConfig",
    "Policy", "Problem", "Retention", "check_text", "key_lines", "load_policies", "parse_policies",
]

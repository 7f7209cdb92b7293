"""Where a command finds a policy: a policy file, else those stored in the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stasis.errors import PolicyNotFound, UsageError

if TYPE_CHECKING:
    from stasis.catalog import Catalog
    from stasis.service.policy import Policy


def load_policy_file(path: Path | None) -> list[Policy]:
    """Every policy of the file ``path`` (validated whole: every problem is listed)."""
    from stasis.service.policy import load_policies

    if path is None:
        raise UsageError("give the policy file with --policies FILE (or $STASIS_POLICIES)")
    return load_policies(path)


def find_policy(c: Catalog, name: str, policies: Path | None, *, doing: str) -> Policy:
    """Policy ``name`` from the file ``policies``, else from those stored in the catalog;
    ``doing`` says what was not done when there is none ("run", "deleted")."""
    from stasis.service.status import stored_policies

    found = [p for p in (load_policy_file(policies) if policies else stored_policies(c))
             if p.name == name]
    if not found:
        where = str(policies) if policies else f"the catalog {c.shown}"
        raise PolicyNotFound(f"no policy named '{name}' in {where}. Nothing was {doing}; "
                             "'stasis policy list FILE' shows the policies.")
    return found[0]

"""The decision inputs refuse what cannot be meant."""

from __future__ import annotations

import pytest

from gateway.core.policy import AccessRule


def test_an_access_rule_needs_an_id() -> None:
    with pytest.raises(ValueError, match="at least one access-right id"):
        AccessRule(())


def test_an_access_rule_defaults_to_any() -> None:
    assert AccessRule(("premium",)).require == "any"

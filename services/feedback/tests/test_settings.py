"""The feedback section is validated at start, naming the key paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from convohub.feedback.bootstrap import create_service
from convohub.runtime.config import ConfigError, parse_config


def test_a_wrong_section_fails_at_construction_with_its_key_paths() -> None:
    config = parse_config(
        """
tenants:
  - id: acme
    name: Acme
    feedback:
      kinds: [csat, stars]
      delay_seconds: -1
      channel_message: [email]
      web_link: [email]
      follow_up: {csat_at_mots: 2}
""",
        {},
    )
    with pytest.raises(ConfigError) as caught:
        create_service(config)
    paths = {problem.path for problem in caught.value.problems}
    assert {
        "tenants[0].feedback.kinds[1]",
        "tenants[0].feedback.delay_seconds",
        "tenants[0].feedback.follow_up.csat_at_mots",
    } <= paths


def test_overlapping_channel_rules_are_refused() -> None:
    config = parse_config(
        "tenants:\n  - {id: a, name: A, feedback: {channel_message: [email], web_link: [email]}}",
        {},
    )
    with pytest.raises(ConfigError, match="both channel_message and web_link: email"):
        create_service(config)


def test_the_example_config_is_valid() -> None:
    fragment = yaml.safe_load((Path(__file__).parents[1] / "example-config.yaml").read_text())
    document = {"tenants": [{"id": "acme", "name": "Acme", **fragment}]}
    service = create_service(parse_config(yaml.safe_dump(document, allow_unicode=True), {}))
    assert service.name == "feedback"

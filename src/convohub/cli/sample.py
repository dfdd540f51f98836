"""The config `convohub up` creates on first run, so a newcomer's hub has a tenant, a channel
of each kind, skill groups, agents, SLA policies and surveys before they write any YAML.

It is the documented example (`convohub.example.yaml`, shipped in this package) with every
`dev-...` fallback secret replaced by a fresh random one, written once to
`<data dir>/convohub.yaml`. The `${VAR:-...}` references stay, so the environment can still
override each secret.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from convohub.runtime.config import HubConfig

EXAMPLE = Path(__file__).with_name("data") / "convohub.example.yaml"
FILE_NAME = "convohub.yaml"
_DEV_FALLBACK = re.compile(r"(\$\{[A-Za-z_][A-Za-z0-9_]*:-)dev-[A-Za-z0-9-]+(\})")
_HEADER = (
    "# Created by `convohub up` on its first run from the documented example, with fresh\n"
    "# random keys and secrets. Edit it freely; `convohub up` loads it from here.\n\n"
)


@dataclass(frozen=True)
class SampleConfig:
    path: Path
    created: bool


def ensure_sample_config(data_dir: Path) -> SampleConfig:
    """`<data_dir>/convohub.yaml`, written from the example if it does not exist yet."""
    path = data_dir / FILE_NAME
    if path.exists():
        return SampleConfig(path, created=False)
    text = _DEV_FALLBACK.sub(
        lambda match: f"{match.group(1)}local-{secrets.token_hex(16)}{match.group(2)}",
        EXAMPLE.read_text(encoding="utf-8"),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(_HEADER + text, encoding="utf-8")
    path.chmod(0o600)  # it holds the keys
    return SampleConfig(path, created=True)


def describe_keys(config: HubConfig) -> list[str]:
    """One line per API key: tenant, role, agent, and the key (for the first-run banner)."""
    lines = []
    for tenant in config.tenants:
        for api_key in tenant.api_keys:
            agent = f" as {api_key.agent_id}" if api_key.agent_id else ""
            secret = api_key.key.get_secret_value()
            lines.append(f"  {tenant.id:<8} {api_key.role.value:<10}{agent:<15} {secret}")
    return lines

"""The declarative `convohub.yaml`: tenants, their API keys and channels, and service sections.

`load_config(path, environment)` reads the file, resolves `${VAR}` / `${VAR:-default}`
references in every string value against the environment it is given (the settings'
snapshot, never `os.environ` directly), and validates the result into frozen models. A
wrong file raises one `ConfigError` listing every problem found, each with the key path
(`tenants[0].channels[2].type`) and the reason, so a typo fails at start, not at the first
message.

Interpolation follows the shell: `${VAR:-default}` uses the default when VAR is unset or
empty, `${VAR}` without a default must be set, and `$$` is a literal `$`.
See `convohub.example.yaml` at the repository root for a documented example.
"""

from __future__ import annotations

import difflib
import hmac
import re
import types
import typing
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from convohub.contracts.events.common import Channel

__all__ = [
    "ApiKey",
    "ChannelConfig",
    "ConfigError",
    "ConfigProblem",
    "HubConfig",
    "Role",
    "Tenant",
    "load_config",
    "service_section",
    "tenant_sections",
]

MIN_API_KEY_LENGTH = 16
# Ids end up in event attributes and webhook URLs, so they stay URL-safe.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ConfigProblem(NamedTuple):
    """One thing wrong with a config: where (a key path, empty for the whole file) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '(file)'}: {self.reason}"


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; `problems` lists every finding."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid config {source} ({count}):\n{lines}")


class Role(StrEnum):
    """What an API key may do: agents handle conversations, supervisors also oversee and
    reassign, admins also manage the tenant's setup."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt key must not be silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKey(_Section):
    """A key an integrator or an agent desktop presents; its value never appears in reprs."""

    key: SecretStr = Field(
        description="The secret itself; reference it as ${ENV_VAR} rather than writing it.",
    )
    role: Role = Field(description="agent, supervisor or admin.")
    agent_id: str | None = Field(
        default=None, min_length=1, description="The agent this key acts as, if it is personal."
    )
    channels: tuple[Identifier, ...] | None = Field(
        default=None,
        description="Channel ids of the tenant this key is limited to; all channels when absent.",
    )

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError(f"an API key needs at least {MIN_API_KEY_LENGTH} characters")
        return key

    def allows_channel(self, channel_id: str) -> bool:
        """Whether this key may act on that channel of its tenant."""
        return self.channels is None or channel_id in self.channels


class ChannelConfig(_Section):
    """One configured channel of a tenant (for example the WhatsApp number `wa-main`)."""

    id: Identifier = Field(description="Unique within the tenant; events name it `channel_id`.")
    type: Channel = Field(description="The kind of channel.")
    provider: str | None = Field(
        default=None, min_length=1, description="Which provider's format the adapter speaks."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="The channel adapter's own settings."
    )
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Webhook signing secrets, tokens: by ${ENV} reference."
    )

    def secret(self, name: str) -> str:
        """The plain value of one secret; KeyError names the channel when it is missing."""
        if name not in self.secrets:
            raise KeyError(f"channel {self.id!r} has no secret {name!r}")
        return self.secrets[name].get_secret_value()


class Tenant(_Section):
    """One company using the hub, with its keys and channels."""

    id: Identifier = Field(description="Tenant id, as carried in every event's `tenantid`.")
    name: str = Field(min_length=1, description="Display name.")
    api_keys: tuple[ApiKey, ...] = Field(default=(), description="Keys that act for the tenant.")
    channels: tuple[ChannelConfig, ...] = Field(default=(), description="Configured channels.")
    routing: dict[str, Any] = Field(
        default_factory=dict, description="The tenant's routing rules (the router's section)."
    )
    sla: dict[str, Any] = Field(
        default_factory=dict, description="The tenant's SLA policies and calendars."
    )
    crm: dict[str, Any] = Field(
        default_factory=dict, description="The tenant's attributes and segment rules."
    )
    feedback: dict[str, Any] = Field(
        default_factory=dict, description="The tenant's survey settings."
    )

    def channel(self, channel_id: str) -> ChannelConfig:
        """The channel with that id; KeyError when the tenant has none."""
        for channel in self.channels:
            if channel.id == channel_id:
                return channel
        raise KeyError(f"tenant {self.id!r} has no channel {channel_id!r}")


_CROSS_CHECKED = "convohub.config.cross_checked"


class HubConfig(_Section):
    """The whole declarative config. Valid by construction: ids unique, keys unique, every
    key's channel scope naming channels of its tenant."""

    tenants: tuple[Tenant, ...] = Field(default=(), description="The tenants the hub serves.")
    routing: dict[str, Any] = Field(default_factory=dict, description="The router's section.")
    sla: dict[str, Any] = Field(default_factory=dict, description="The SLA service's section.")
    feedback: dict[str, Any] = Field(default_factory=dict, description="Surveys and metrics.")
    crm: dict[str, Any] = Field(default_factory=dict, description="The CRM service's section.")

    @model_validator(mode="after")
    def _references_are_consistent(self, info: ValidationInfo) -> HubConfig:
        if info.context and info.context.get(_CROSS_CHECKED):
            return self  # load_config already checked the raw document, with the other errors
        problems = _cross_check(self.model_dump()["tenants"])
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        return self

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant with that id; KeyError when there is none."""
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise KeyError(f"no tenant {tenant_id!r} in the config")

    def find_api_key(self, key: str) -> tuple[Tenant, ApiKey] | None:
        """The tenant and key entry matching a presented key, or None.

        Compares against every configured key in constant time per key and never stops
        early, so response timing does not reveal how much of a key was right, or where.
        """
        candidate = key.encode()
        found: tuple[Tenant, ApiKey] | None = None
        for tenant in self.tenants:
            for api_key in tenant.api_keys:
                if hmac.compare_digest(candidate, api_key.key.get_secret_value().encode()):
                    found = found or (tenant, api_key)
        return found


def load_config(path: Path, environment: Mapping[str, str]) -> HubConfig:
    """Read, interpolate and validate a convohub.yaml; `ConfigError` lists every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [ConfigProblem("", "is not UTF-8 text")]) from None
    return parse_config(text, environment, source=source)


def parse_config(text: str, environment: Mapping[str, str], *, source: str = "<text>") -> HubConfig:
    """`load_config` for YAML already in memory (`source` names it in errors)."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as error:
        raise ConfigError(source, [_yaml_problem(error)]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [ConfigProblem("", f"YAML syntax error: {error}")]) from None
    if document is None:
        raise ConfigError(source, [ConfigProblem("", "the file is empty; expected `tenants:`")])
    if not isinstance(document, dict):
        found = type(document).__name__
        raise ConfigError(
            source, [ConfigProblem("", f"expected a mapping at the top, got {found}")]
        )

    problems: list[ConfigProblem] = []
    interpolated = _interpolate(document, "", environment, problems)
    unresolved = {problem.path for problem in problems}
    problems.extend(_cross_check(interpolated.get("tenants")))
    try:
        config = HubConfig.model_validate(interpolated, context={_CROSS_CHECKED: True})
    except ValidationError as error:
        # A value whose reference could not be resolved was reported already; its
        # placeholder text would only add noise (a key "too short", say).
        problems.extend(
            problem for problem in _validation_problems(error) if problem.path not in unresolved
        )
        config = None
    if problems:
        ordered = sorted(dict.fromkeys(problems), key=lambda problem: _path_order(problem.path))
        raise ConfigError(source, ordered)
    assert config is not None
    return config


SectionModel = typing.TypeVar("SectionModel", bound=BaseModel)
SERVICE_SECTIONS = ("routing", "sla", "crm", "feedback")


def tenant_sections(
    config: HubConfig, section: str, model: type[SectionModel], *, source: str = "convohub.yaml"
) -> dict[str, SectionModel]:
    """Each tenant's `section` (`routing`, `sla`, `crm`, `feedback`) validated by the
    service's own `model`, by tenant id. One `ConfigError` lists every problem of every
    tenant with its full key path (`tenants[1].routing.rules[0].priority`)."""
    if section not in SERVICE_SECTIONS:
        raise ValueError(f"no tenant section {section!r}; expected one of {SERVICE_SECTIONS}")
    problems: list[ConfigProblem] = []
    sections: dict[str, SectionModel] = {}
    for index, tenant in enumerate(config.tenants):
        try:
            sections[tenant.id] = model.model_validate(getattr(tenant, section))
        except ValidationError as error:
            problems.extend(_validation_problems(error, model, f"tenants[{index}].{section}"))
    if problems:
        raise ConfigError(source, problems)
    return sections


def service_section(
    config: HubConfig, section: str, model: type[SectionModel], *, source: str = "convohub.yaml"
) -> SectionModel:
    """The top-level `section` (service-wide settings) validated by `model`."""
    if section not in SERVICE_SECTIONS:
        raise ValueError(f"no section {section!r}; expected one of {SERVICE_SECTIONS}")
    try:
        return model.model_validate(getattr(config, section))
    except ValidationError as error:
        raise ConfigError(source, _validation_problems(error, model, section)) from None


# --- YAML ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` then overriding a key is intended
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        except TypeError:
            pass  # unhashable key: construct_mapping reports it
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(error: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = error.problem_mark or error.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = " ".join(part for part in (error.context, error.problem) if part)
    return ConfigProblem("", f"YAML syntax error{where}: {what}")


# --- interpolation ------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _path_order(path: str) -> list[tuple[int, int | str]]:
    """Sort key that puts `[2]` before `[10]`, so problems come in document order."""
    return [
        (0, int(token)) if token.isdigit() else (1, token)
        for token in re.findall(r"\d+|[^.\[\]]+", path)
    ]


def _interpolate(
    value: Any, path: str, environment: Mapping[str, str], problems: list[ConfigProblem]
) -> Any:
    if isinstance(value, str):
        return _interpolate_string(value, path, environment, problems)
    if isinstance(value, dict):
        return {
            key: _interpolate(item, _join(path, key), environment, problems)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(item, _join(path, index), environment, problems)
            for index, item in enumerate(value)
        ]
    return value


def _interpolate_string(
    text: str, path: str, environment: Mapping[str, str], problems: list[ConfigProblem]
) -> str:
    def substitute(match: re.Match[str]) -> str:
        whole, body = match.group(0), match.group(1)
        if whole == "$$":
            return "$"
        if body is None:
            problems.append(ConfigProblem(path, "`${` without a closing `}`"))
            return whole
        name, has_default, default = body.partition(":-")
        if not _VARIABLE_NAME.fullmatch(name):
            reason = f"`{whole}` is not a reference; use ${{VAR}} or ${{VAR:-default}}"
            problems.append(ConfigProblem(path, reason))
            return whole
        value = environment.get(name)
        if has_default and not value:
            return default
        if value is None:
            problems.append(
                ConfigProblem(
                    path,
                    f"environment variable {name} is not set "
                    f"(set it, or give a default: ${{{name}:-default}})",
                )
            )
            return whole
        return value

    return _REFERENCE.sub(substitute, text)


# --- cross-references ---------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list | tuple) else []


def _cross_check(tenants: Any) -> list[ConfigProblem]:
    """Uniqueness and references, on raw or dumped data (tolerates any shape)."""
    problems: list[ConfigProblem] = []
    tenant_ids: dict[str, str] = {}
    key_paths: dict[str, str] = {}
    for tenant_index, tenant in _items(tenants):
        if not isinstance(tenant, Mapping):
            continue
        tenant_path = f"tenants[{tenant_index}]"
        tenant_id = tenant.get("id")
        if isinstance(tenant_id, str):
            if tenant_id in tenant_ids:
                reason = f"duplicate tenant id {tenant_id!r} (also at {tenant_ids[tenant_id]})"
                problems.append(ConfigProblem(f"{tenant_path}.id", reason))
            else:
                tenant_ids[tenant_id] = f"{tenant_path}.id"

        channel_ids: dict[str, str] = {}
        for channel_index, channel in _items(tenant.get("channels")):
            channel_id = channel.get("id") if isinstance(channel, Mapping) else None
            if not isinstance(channel_id, str):
                continue
            channel_path = f"{tenant_path}.channels[{channel_index}].id"
            if channel_id in channel_ids:
                reason = (
                    f"duplicate channel id {channel_id!r} in tenant {tenant_id!r} "
                    f"(also at {channel_ids[channel_id]})"
                )
                problems.append(ConfigProblem(channel_path, reason))
            else:
                channel_ids[channel_id] = channel_path

        for key_index, api_key in _items(tenant.get("api_keys")):
            if not isinstance(api_key, Mapping):
                continue
            key_path = f"{tenant_path}.api_keys[{key_index}]"
            key = _plain(api_key.get("key"))
            if isinstance(key, str) and key:
                if key in key_paths:  # the key itself is never quoted
                    reason = f"the same key is already used at {key_paths[key]}"
                    problems.append(ConfigProblem(f"{key_path}.key", reason))
                else:
                    key_paths[key] = f"{key_path}.key"
            for scope_index, scope in _items(api_key.get("channels")):
                if isinstance(scope, str) and scope not in channel_ids:
                    reason = f"tenant {tenant_id!r} has no channel {scope!r}"
                    problems.append(ConfigProblem(f"{key_path}.channels[{scope_index}]", reason))
    return problems


# --- pydantic errors ----------------------------------------------------------------------


def _model_at(
    location: Sequence[Any], root: type[BaseModel] | None = None
) -> type[BaseModel] | None:
    """The config model that holds the value at `location` (a pydantic error loc)."""
    model: type[BaseModel] = root or HubConfig
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        inner = _model_in(field.annotation) if field else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def _validation_problems(
    error: ValidationError, root: type[BaseModel] | None = None, prefix: str = ""
) -> list[ConfigProblem]:
    problems = []
    for detail in error.errors(include_url=False):
        location = list(detail["loc"])
        if location and location[-1] == "[key]":
            location.pop()
        path = prefix
        for part in location:
            path = _join(path, part)
        problems.append(ConfigProblem(path, _reason(detail, location, root)))
    return problems


def _reason(detail: Any, location: list[Any], root: type[BaseModel] | None = None) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        model = _model_at(location[:-1], root)
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({hint}expected one of: {', '.join(allowed)})"
    if kind == "missing":
        return "required key is missing"
    message = detail["msg"]
    secret_place = any(part in ("key", "secrets") for part in location)
    if kind in ("enum", "literal_error") and isinstance(detail["input"], str) and not secret_place:
        return f"{detail['input']!r} is not allowed: {message}"
    return message

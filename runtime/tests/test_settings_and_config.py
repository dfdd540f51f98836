"""Settings from the environment, and the declarative convohub.yaml with its error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from convohub.contracts.events.common import Channel
from convohub.runtime.config import ConfigError, HubConfig, Role, load_config
from convohub.runtime.settings import RuntimeSettings, SettingsError

REPO_DIR = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_DIR / "convohub.example.yaml"

AGENT_KEY = "agent-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"

VALID = f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: "{AGENT_KEY}", role: agent, agent_id: agent-1, channels: [sms-main]}}
      - {{key: "{ADMIN_KEY}", role: admin}}
    channels:
      - {{id: sms-main, type: sms, provider: twilio, secrets: {{token: "${{SMS_TOKEN}}"}}}}
      - {{id: chat, type: web_chat}}
  - id: globex
    name: Globex
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "convohub.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, environment: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(
            write(tmp_path, text), {"SMS_TOKEN": "t"} if environment is None else environment
        )
    return str(caught.value)


# --- the example and the happy path -------------------------------------------------------


def test_the_example_config_loads_with_every_channel_type_and_role() -> None:
    config = load_config(EXAMPLE, {})

    acme = config.tenant("acme")
    assert {channel.type for channel in acme.channels} == set(Channel)
    assert {key.role for key in acme.api_keys} == set(Role)
    whatsapp = acme.channel("wa-main")
    assert whatsapp.secret("app_secret") == "dev-whatsapp-app-secret"


def test_the_example_takes_secrets_from_the_environment_when_set() -> None:
    config = load_config(EXAMPLE, {"ACME_SMS_AUTH_TOKEN": "real-token"})
    assert config.tenant("acme").channel("sms-main").secret("auth_token") == "real-token"


def test_interpolation_with_and_without_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        tenants:
          - id: acme
            name: "${TENANT_NAME} (${REGION:-eu})"
            channels:
              - id: chat
                type: web_chat
                settings:
                  greeting: "${GREETING:-}"
                  price: "$$5 ${CURRENCY:-EUR}"
                  empty_uses_default: "${EMPTY:-fallback}"
        """,
    )
    config = load_config(path, {"TENANT_NAME": "Acme", "CURRENCY": "CNY", "EMPTY": ""})

    acme = config.tenant("acme")
    assert acme.name == "Acme (eu)"
    assert acme.channel("chat").settings == {
        "greeting": "",
        "price": "$5 CNY",
        "empty_uses_default": "fallback",
    }


def test_find_api_key_returns_the_tenant_and_the_key_entry(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {"SMS_TOKEN": "t"})

    found = config.find_api_key(AGENT_KEY)
    assert found is not None
    tenant, api_key = found
    assert (tenant.id, api_key.role, api_key.agent_id) == ("acme", Role.AGENT, "agent-1")
    assert api_key.allows_channel("sms-main")
    assert not api_key.allows_channel("chat")
    assert config.find_api_key(AGENT_KEY[:-1] + "X") is None
    assert config.find_api_key("") is None


def test_secrets_do_not_show_in_reprs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {"SMS_TOKEN": "the-sms-token"})
    assert AGENT_KEY not in repr(config)
    assert "the-sms-token" not in repr(config)


def test_tenant_lookup_names_the_missing_id(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {"SMS_TOKEN": "t"})
    with pytest.raises(KeyError, match="initech"):
        config.tenant("initech")


def test_the_models_are_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {"SMS_TOKEN": "t"})
    with pytest.raises(ValueError, match="frozen"):
        config.tenants[0].name = "Other"  # type: ignore[misc]


# --- every error names the key path and the reason ----------------------------------------


def test_an_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("    channels:", "    chanels:"))
    assert "tenants[0].chanels: unknown key (did you mean 'channels'?" in message


def test_an_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID + "routng: {}\n")
    assert "routng: unknown key (did you mean 'routing'?" in message


def test_an_unknown_channel_key_is_an_error(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        VALID.replace("{id: chat, type: web_chat}", "{id: chat, type: web_chat, colour: red}"),
    )
    assert "tenants[0].channels[1].colour: unknown key" in message


def test_a_duplicate_tenant_id_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("id: globex", "id: acme"))
    assert "tenants[1].id: duplicate tenant id 'acme' (also at tenants[0].id)" in message


def test_a_duplicate_channel_id_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("{id: chat,", "{id: sms-main,"))
    assert "tenants[0].channels[1].id: duplicate channel id 'sms-main'" in message


def test_a_bad_role_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("role: admin", "role: root"))
    assert "tenants[0].api_keys[1].role: 'root' is not allowed" in message
    assert "'agent', 'supervisor' or 'admin'" in message


def test_a_bad_channel_type_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("type: web_chat", "type: fax"))
    assert "tenants[0].channels[1].type: 'fax' is not allowed" in message
    assert "'whatsapp'" in message


def test_a_missing_variable_names_the_variable_and_the_key(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID, environment={})
    assert "tenants[0].channels[0].secrets.token: environment variable SMS_TOKEN is not set" in (
        message
    )


def test_a_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = "tenants:\n  - id: acme\n    name: [unclosed\n"
    message = problems_of(tmp_path, text)
    assert "YAML syntax error at line 4" in message


def test_a_key_given_twice_in_yaml_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "tenants: []\ntenants: []\n")
    assert "line 2" in message
    assert "'tenants' twice" in message


def test_a_scope_naming_an_unknown_channel_is_an_error(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace("channels: [sms-main]", "channels: [sms-mian]"))
    assert "tenants[0].api_keys[0].channels[0]: tenant 'acme' has no channel 'sms-mian'" in message


def test_a_key_used_twice_is_named_without_quoting_it(tmp_path: Path) -> None:
    message = problems_of(tmp_path, VALID.replace(ADMIN_KEY, AGENT_KEY))
    assert "tenants[0].api_keys[1].key: the same key is already used at" in message
    assert AGENT_KEY not in message


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    broken = (
        VALID.replace("role: admin", "role: root")
        .replace("type: web_chat", "type: fax")
        .replace("id: globex", "id: acme")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, broken), {})

    paths = {problem.path for problem in caught.value.problems}
    assert paths == {
        "tenants[0].api_keys[1].role",
        "tenants[0].channels[1].type",
        "tenants[1].id",
        "tenants[0].channels[0].secrets.token",
    }


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", {})


def test_building_a_hub_config_in_code_checks_duplicates_too() -> None:
    tenant = {"id": "acme", "name": "Acme"}
    with pytest.raises(ValueError, match=r"tenants\[1\]\.id: duplicate tenant id"):
        HubConfig.model_validate({"tenants": [tenant, tenant]})


# --- settings -----------------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ConvoHub, Kafka, database or OTLP variable from the outer shell leaks in."""
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "CONVOHUB_MODE",
        "CONVOHUB_CONFIG",
        "CONVOHUB_KAFKA_BOOTSTRAP_SERVERS",
        "CONVOHUB_DATABASE_URL",
        "CONVOHUB_OTEL_EXPORTER_OTLP_ENDPOINT",
        "CONVOHUB_SERVICE_NAME",
        "CONVOHUB_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_read_the_prefixed_variables(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("CONVOHUB_MODE", "distributed")
    clean_environment.setenv("CONVOHUB_DATA_DIR", "/var/lib/convohub")
    clean_environment.setenv("CONVOHUB_CONFIG", "/etc/convohub.yaml")
    clean_environment.setenv("CONVOHUB_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    clean_environment.setenv("CONVOHUB_DATABASE_URL", "postgresql+asyncpg://u:p@db/hub")
    clean_environment.setenv("CONVOHUB_SERVICE_NAME", "router")
    clean_environment.setenv("CONVOHUB_LOG_LEVEL", "debug")
    clean_environment.setenv("CONVOHUB_LOG_FORMAT", "console")
    clean_environment.setenv("CONVOHUB_HTTP_PORT", "9100")

    settings = RuntimeSettings()

    assert settings.mode == "distributed"
    assert settings.data_dir == Path("/var/lib/convohub")
    assert settings.config == Path("/etc/convohub.yaml")
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.database_url == "postgresql+asyncpg://u:p@db/hub"
    assert (settings.service_name, settings.log_level, settings.log_format) == (
        "router",
        "DEBUG",
        "console",
    )
    assert settings.http_port == 9100
    assert "p@db" not in repr(settings)
    settings.check_mode_requirements()


def test_settings_accept_the_plain_ecosystem_names(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    clean_environment.setenv("DATABASE_URL", "postgresql+asyncpg://db/hub")
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")

    settings = RuntimeSettings()

    assert settings.kafka_bootstrap_servers == "broker:9092"
    assert settings.database_url == "postgresql+asyncpg://db/hub"
    assert settings.otel_exporter_otlp_endpoint == "http://collector:4318"


def test_the_prefixed_name_wins_over_the_plain_one(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "plain:9092")
    clean_environment.setenv("CONVOHUB_KAFKA_BOOTSTRAP_SERVERS", "prefixed:9092")
    assert RuntimeSettings().kafka_bootstrap_servers == "prefixed:9092"


def test_keyword_arguments_override_the_environment(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    settings = RuntimeSettings(kafka_bootstrap_servers="from-code:9092")
    assert settings.kafka_bootstrap_servers == "from-code:9092"


def test_an_unknown_log_level_is_rejected(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("CONVOHUB_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="expected one of CRITICAL"):
        RuntimeSettings()


def test_the_distributed_mode_names_every_missing_setting(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SettingsError) as caught:
        RuntimeSettings(mode="distributed").check_mode_requirements()
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(caught.value)
    assert "DATABASE_URL" in str(caught.value)

    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    with pytest.raises(SettingsError) as caught:
        RuntimeSettings(mode="distributed").check_mode_requirements()
    assert "KAFKA" not in str(caught.value)
    assert "CONVOHUB_DATABASE_URL (or DATABASE_URL)" in str(caught.value)


def test_the_embedded_mode_needs_nothing(clean_environment: pytest.MonkeyPatch) -> None:
    settings = RuntimeSettings()
    assert settings.mode == "embedded"
    assert settings.data_dir == Path(".convohub")
    settings.check_mode_requirements()


def test_the_config_is_interpolated_from_the_settings_environment(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv("CONVOHUB_CONFIG", str(write(tmp_path, VALID)))
    clean_environment.setenv("SMS_TOKEN", "token-from-env")

    settings = RuntimeSettings()
    config = settings.load_hub_config()

    assert settings.environment()["SMS_TOKEN"] == "token-from-env"
    assert config is not None
    assert config.tenant("acme").channel("sms-main").secret("token") == "token-from-env"


def test_no_config_file_means_no_hub_config(clean_environment: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings().load_hub_config() is None

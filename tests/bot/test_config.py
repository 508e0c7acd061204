"""config.toml: the shipped file loads, and a bad file says what is wrong and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_CONFIG, ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_loads():
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.catalog.default_version == "builtin"
    assert settings.catalog.versions["builtin"].source == "builtin"
    assert settings.catalog.niji["6"].lora == "niji"
    assert settings.limits.max_jobs == 10
    assert settings.catalog.lora_dir == DEFAULT_CONFIG.parent / "generation/builtin/loras"
    assert settings.queue.default_mode == "fast"


def test_an_empty_file_gives_the_defaults(tmp_path):
    settings = load_settings(write(tmp_path, ""))
    assert settings.catalog.default_version == "builtin"
    assert settings.storage.database_url.startswith("sqlite+aiosqlite:")
    assert settings.storage.image_dir == tmp_path / "data/images"


def test_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    settings = load_settings(write(tmp_path, """
[models]
default_version = "mine"
[models.versions.mine]
source = "models"
ip_adapter = "adapters/ip-adapter_sd15.safetensors"
[models.versions.hub]
source = "someone/some-model"
"""))
    assert settings.catalog.versions["mine"].source == str(tmp_path / "models")
    assert settings.catalog.versions["mine"].ip_adapter == str(tmp_path / "adapters/ip-adapter_sd15.safetensors")
    assert settings.catalog.versions["hub"].source == "someone/some-model"


@pytest.mark.parametrize(("text", "message"), [
    ("[limits\n", "not valid TOML"),
    ("[limits]\nmax_jobs = 3\n", "limits.max_jobs: Extra inputs are not permitted"),
    ("[limits]\nmax_jobs_per_prompt = 'ten'\n", "limits.max_jobs_per_prompt: Input should be a valid integer"),
    ("[limits]\nmax_jobs_per_prompt = 0\n", "limits.max_jobs_per_prompt: Input should be greater than or equal to 1"),
    ("[models]\ndefault_version = 'sdxl'\n", "default_version 'sdxl' is not one of the versions ['builtin']"),
    ("[models.niji.versions.6]\nmodel = 'anime'\n", "models.niji.versions.6.model: 'anime' is not one of the versions"),
    ("[models.niji.versions.6]\n", "models.niji.versions.6: set exactly one of `model` or `lora`"),
    ("[models]\nsamplers = ['euler', 'magic']\n", "unknown samplers ['magic']"),
    ("[queue]\ndefault_mode = 'slow'\n", "queue.default_mode: Input should be 'fast', 'relax' or 'turbo'"),
    ("[queue]\ndefault_mode = 'relax'\nallowed_modes = ['fast']\n", "queue.default_mode 'relax' is not in"),
])
def test_a_bad_file_names_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_the_token_is_not_a_setting(tmp_path):
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
        load_settings(write(tmp_path, "[discord]\ntoken = 'abc'\n"))


def test_community_settings_are_read_and_checked(tmp_path):
    from bot.config import ConfigError, load_settings

    path = tmp_path / "config.toml"
    path.write_text('[queue]\nburst = "5 per 10 seconds"\nrelax_every = 3\nguild_queued = 50\n'
                    '[quotas]\nfast_minutes_per_day = 30\nfast_hours_per_month = 2\n'
                    '[moderation]\nbanned_words = ["Gore", "blood bath"]\nnsfw_policy = "withhold"\n')
    settings = load_settings(path)
    assert settings.queue.burst == "5 per 10 seconds"
    assert (settings.queue.caps.relax_every, settings.queue.caps.guild_queued) == (3, 50)
    assert (settings.quotas.fast_seconds_per_day, settings.quotas.fast_seconds_per_month) == (1800, 7200)
    assert settings.moderation.banned_words == ("Gore", "blood bath")
    assert settings.moderation.nsfw_policy == "withhold" and settings.moderation.safety_checker is None

    for bad, complaint in (('[queue]\nburst = "often"\n', "queue.burst"),
                           ('[moderation]\nbanned_words = ["!!!"]\n', "moderation.banned_words"),
                           ('[moderation]\nnsfw_policy = "show"\n', "nsfw_policy"),
                           ('[queue]\nqueued = { fast = 3 }\n', "queue.queued")):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=complaint):
            load_settings(path)


def test_the_workers_broker_comes_from_the_environment_when_set(tmp_path, monkeypatch):
    path = write(tmp_path, '[queue]\nbroker_url = "redis://127.0.0.1:6380/2"\n')
    monkeypatch.delenv("IMAGINE_BROKER_URL", raising=False)
    assert load_settings(path).queue.broker_url == "redis://127.0.0.1:6380/2"
    monkeypatch.setenv("IMAGINE_BROKER_URL", "redis://:secret@redis.internal:6379/0")
    assert load_settings(path).queue.broker_url == "redis://:secret@redis.internal:6379/0"
    assert load_settings(write(tmp_path, "")).metrics.port == 0  # /metrics is off unless asked for


def test_the_executor_is_local_unless_config_or_environment_say_celery(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGINE_EXECUTOR", raising=False)
    assert load_settings(write(tmp_path, "")).queue.executor == "local"
    path = write(tmp_path, '[queue]\nexecutor = "celery"\nlease_seconds = 8\n')
    assert (load_settings(path).queue.executor, load_settings(path).queue.lease_seconds) == ("celery", 8)
    monkeypatch.setenv("IMAGINE_EXECUTOR", "local")
    assert load_settings(path).queue.executor == "local"
    monkeypatch.setenv("IMAGINE_EXECUTOR", "gpu")
    with pytest.raises(ConfigError, match='IMAGINE_EXECUTOR is "local" or "celery", not \'gpu\''):
        load_settings(path)
    monkeypatch.delenv("IMAGINE_EXECUTOR")
    for bad, complaint in (('[queue]\nexecutor = "threads"\n', r"queue\.executor"),
                           ("[queue]\nlease_seconds = 0.1\n", r"queue\.lease_seconds")):
        with pytest.raises(ConfigError, match=complaint):
            load_settings(write(tmp_path, bad))


def test_a_database_url_with_a_password_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGINE_DATABASE_URL", raising=False)
    assert load_settings(write(tmp_path, "")).storage.database_url == "sqlite+aiosqlite:///data/bot.db"
    monkeypatch.setenv("IMAGINE_DATABASE_URL", "postgresql+asyncpg://imagine:secret@db/imagine")
    assert load_settings(write(tmp_path, "")).storage.database_url == "postgresql+asyncpg://imagine:secret@db/imagine"


def test_the_broker_password_is_not_logged():
    from bot.worker import _without_password

    assert _without_password("redis://:secret@redis.internal:6379/0") == "redis://:***@redis.internal:6379/0"
    assert _without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

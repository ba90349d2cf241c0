import re
from pathlib import Path

import pytest

from camtrace.errors import ConfigError
from camtrace.settings import Settings, load_settings, settings_markdown, unknown_env_variables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_is_the_generated_one():
    table = re.search(r"<!-- settings:start -->\n(.*)\n<!-- settings:end -->", README.read_text(), re.S).group(1)
    assert table == settings_markdown(), "run: camtrace settings --markdown, and paste it into README.md"


def test_a_misspelt_variable_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("CAMTRACE_EMBED_MODLE", "x")
    assert unknown_env_variables() == ["CAMTRACE_EMBED_MODLE"]
    with pytest.raises(ConfigError, match="CAMTRACE_EMBED_MODLE"):
        load_settings()


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("CAMTRACE_SAMPLE_FPS", "-1")
    with pytest.raises(ConfigError, match="CAMTRACE_SAMPLE_FPS"):
        load_settings()
    monkeypatch.setenv("CAMTRACE_SAMPLE_FPS", "5")
    monkeypatch.setenv("CAMTRACE_DEVICE", "gpu0")
    with pytest.raises(ConfigError, match="CAMTRACE_DEVICE"):
        load_settings()


def test_a_local_model_folder_uses_its_own_processor_unless_one_is_named(tmp_path, monkeypatch):
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CAMTRACE_{name.upper()}", raising=False)
    (tmp_path / "processor_config.json").write_text("{}")
    assert Settings(embed_model=str(tmp_path)).effective_embed_processor() is None
    assert Settings().effective_embed_processor() == "google/siglip2-base-patch16-224"
    assert Settings(embed_model=str(tmp_path), embed_processor="x/y").effective_embed_processor() == "x/y"
    monkeypatch.setenv("CAMTRACE_EMBED_PROCESSOR", "")
    assert Settings().effective_embed_processor() is None


def test_empty_values_mean_unset(monkeypatch):
    monkeypatch.setenv("CAMTRACE_BROKER_URL", "")
    monkeypatch.setenv("CAMTRACE_QDRANT_URL", "")
    settings = load_settings()
    assert settings.broker_url is None and settings.qdrant_url is None

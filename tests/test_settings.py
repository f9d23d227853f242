"""Settings: defaults < file < PONDER_* environment < flags; unknown keys are errors naming the key."""

import pathlib

import pytest

from ponderd.settings import SettingsError, load_settings


def test_precedence_file_then_environment_then_flags(tmp_path):
    config = tmp_path / "ponder.toml"
    config.write_text('listen = "127.0.0.1:1"\ntimezone = "Europe/Berlin"\n[model]\nn_ctx = 4096\nn_seq_max = 4\n')
    env = {"PONDER_LISTEN": "127.0.0.1:2", "PONDER_MODEL_N_CTX": "2048"}
    s = load_settings(config, env=env, overrides={"state_dir": tmp_path})
    assert (s.listen, s.timezone, s.model.n_ctx, s.model.n_seq_max) == ("127.0.0.1:2", "Europe/Berlin", 2048, 4)
    s = load_settings(config, env=env, overrides={"listen": "127.0.0.1:3", "state_dir": tmp_path})
    assert s.listen == "127.0.0.1:3"
    assert s.database == tmp_path / "ponder.db"


def test_state_dir_defaults_to_xdg_state_home():
    s = load_settings(env={"XDG_STATE_HOME": "/var/tmp/xdg"})
    assert s.state_dir == pathlib.Path("/var/tmp/xdg/ponder")
    assert load_settings(env={"PONDER_STATE_DIR": "/srv/p"}).state_dir == pathlib.Path("/srv/p")


def test_the_second_view_is_on_by_default_and_can_be_turned_off():
    assert load_settings(env={}).risk.second_view is True
    assert load_settings(env={"PONDER_RISK_SECOND_VIEW": "false"}).risk.second_view is False


def test_config_file_from_environment(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("quickstart = false\n")
    assert load_settings(env={"PONDER_CONFIG": str(config)}).quickstart is False


@pytest.mark.parametrize(
    "text, message",
    [
        ('lisen = "x:1"', "unknown setting 'lisen'"),
        ("[model]\nctx = 5", "unknown setting 'model.ctx'"),
        ('[model]\nn_ctx = "big"', "model.n_ctx must be a int, not 'big'"),
        ('timezone = "Mars/Olympus"', "timezone 'Mars/Olympus' is not an IANA zone"),
        ('listen = "50051"', "listen must be HOST:PORT"),
        ('model = 3', "[model] must be a table"),
        ("quickstart = maybe", "not valid TOML"),
        ('[risk]\nhigh_recall_target = 0.2', "risk.high_recall_target must be between 0.5 and 1.0"),
    ],
)
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError) as err:
        load_settings(config, env={})
    assert message in str(err.value)
    assert str(config) in str(err.value)


def test_bad_environment_value_is_an_error():
    with pytest.raises(SettingsError, match="quickstart must be a bool"):
        load_settings(env={"PONDER_QUICKSTART": "perhaps"})

import datetime as dt
import subprocess
import sys

import pytest

from enrich.config import load_settings, mask_key
from enrich.errors import ConfigError
from tests.conftest import subprocess_env


def test_defaults_without_key_use_sample(tmp_path):
    s = load_settings({}, dotenv_path=None)
    assert s.provider == "sample"
    assert s.rate_limit_per_min == 5
    assert s.schedule_utc == dt.time(1, 30)
    assert s.max_concurrent_symbols == 5 and s.max_retries == 3
    assert s.base_url == "https://api.massive.com"


def test_key_selects_massive_and_polygon_alias():
    s = load_settings({"MASSIVE_API_KEY": "abcdef123456"}, dotenv_path=None)
    assert s.provider == "massive"
    s = load_settings({"POLYGON_API_KEY": "abcdef123456"}, dotenv_path=None)
    assert s.provider == "massive" and s.api_key == "abcdef123456"


def test_key_never_in_repr_or_public():
    s = load_settings({"MASSIVE_API_KEY": "sekretKEY123456"}, dotenv_path=None)
    assert "sekretKEY123456" not in repr(s)
    assert "sekretKEY123456" not in str(s.public())
    assert mask_key("sekretKEY123456").startswith("se") and "KEY1234" not in mask_key(
        "sekretKEY123456")


@pytest.mark.parametrize("env,needle", [
    ({"ENRICH_SCHEDULE_UTC": "25:00"}, "ENRICH_SCHEDULE_UTC"),
    ({"ENRICH_SCHEDULE_UTC": "1:3"}, "HH:MM"),
    ({"ENRICH_RATE_LIMIT_PER_MIN": "fast"}, "ENRICH_RATE_LIMIT_PER_MIN"),
    ({"ENRICH_MAX_CONCURRENT_SYMBOLS": "0"}, "out of range"),
    ({"ENRICH_PROVIDER": "yahoo"}, "sample"),
    ({"ENRICH_PROVIDER": "massive"}, "MASSIVE_API_KEY"),
    ({"MASSIVE_BASE_URL": "ftp://x"}, "MASSIVE_BASE_URL"),
    ({"ENRICH_SCHEDULER": "maybe"}, "on"),
])
def test_bad_values_say_what_to_fix(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(env, dotenv_path=None)


def test_dotenv_is_read_and_environment_wins(tmp_path):
    f = tmp_path / ".env"
    f.write_text("ENRICH_RATE_LIMIT_PER_MIN=7\nENRICH_MAX_RETRIES=4\n")
    s = load_settings({"ENRICH_MAX_RETRIES": "2"}, dotenv_path=f)
    assert s.rate_limit_per_min == 7 and s.max_retries == 2


def test_cli_bad_schedule_exits_2_without_traceback(tmp_path):
    env = subprocess_env(tmp_path, ENRICH_SCHEDULE_UTC="25:00")
    p = subprocess.run([sys.executable, "-m", "enrich", "status"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "ENRICH_SCHEDULE_UTC" in p.stderr and "Traceback" not in p.stderr

"""`python -m bot ...` as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"} | (env or {})
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_parse_prints_the_documented_json():
    result = run_bot("parse", "space::2 ship <lora:pixel:0.8> —ar 16:9 --no fog, rain")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"jobs": [{
        "segments": [{"text": "space", "weight": 2.0}, {"text": "ship", "weight": 1.0},
                     {"text": "fog", "weight": -0.5}, {"text": "rain", "weight": -0.5}],
        "params": {"aspect": "16:9", "chaos": 0, "quality": 1, "seed": None, "stop": 100, "stylize": 100,
                   "tile": False, "niji": None, "version": None, "style": None, "image_weight": 1,
                   "steps": None, "cfg": None, "sampler": None, "mode": None},
        "image_urls": [], "loras": [{"name": "pixel", "weight": 0.8}]}]}


def test_parse_lists_one_entry_per_job():
    result = run_bot("parse", "a {red, blue} bird --r 2")
    assert [job["segments"][0]["text"] for job in json.loads(result.stdout)["jobs"]] == [
        "a red bird", "a red bird", "a blue bird", "a blue bird"]


def test_parse_refuses_with_exit_2_and_the_message():
    result = run_bot("parse", "a cat --chaso 20")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "error: unknown parameter --chaso: did you mean --chaos?\n"


def test_parse_check_validates_against_the_config():
    result = run_bot("parse", "--check", "a cat --v 9")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown version --v 9: available: builtin")
    ok = run_bot("parse", "--check", "a cat")
    assert json.loads(ok.stdout)["jobs"][0]["params"]["version"] == "builtin"


def test_parse_imports_no_model_code():
    code = ("import sys; from bot.cli import main; main(['parse', 'a cat --ar 2:3']); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'discord') if m in sys.modules]; "
            "print(heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stderr.strip() == "[]"


def test_run_without_a_token_explains_in_one_line():
    result = run_bot("run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "export DISCORD_TOKEN=" in result.stderr and "python -m bot parse" in result.stderr


def test_run_with_a_token_that_cannot_log_in_fails_in_one_line():
    # no route to Discord here (and a wrong token where there is one): either way, no traceback
    result = run_bot("run", env={"DISCORD_TOKEN": "not-a-real-token"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not-a-real-token" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("could not reach Discord", "Discord refused the token"))


def test_a_bad_config_is_reported_not_raised(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[limits]\nmax_jobs_per_prompt = -1\n")
    result = run_bot("parse", "a cat", env={"BOT_CONFIG": str(bad)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: limits.max_jobs_per_prompt")

"""`python -m bot ...` as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_serve_with_a_token_that_cannot_log_in_fails_in_one_line():
    # no route to Discord here (and a wrong token where there is one): either way, no traceback; a
    # refused token stops for good (2), an unreachable Discord asks the supervisor for another try (69)
    result = run_bot("serve", env={"DISCORD_TOKEN": "not-a-real-token"})
    last_line = result.stderr.strip().splitlines()[-1]
    assert (result.returncode, last_line.startswith("could not reach Discord")) in ((69, True), (2, False))
    assert "Traceback" not in result.stderr
    assert "not-a-real-token" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("could not reach Discord", "Discord refused the token"))


def test_sync_without_a_token_or_a_route_to_discord_fails_in_one_line():
    result = run_bot("sync")
    assert result.returncode == 2 and "export DISCORD_TOKEN=" in result.stderr
    result = run_bot("sync", "--guild", "123", env={"DISCORD_TOKEN": "not-a-real-token"})
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr and "not-a-real-token" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("could not sync", "Discord refused the token"))


def test_a_bad_config_is_reported_not_raised(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[limits]\nmax_jobs_per_prompt = -1\n")
    result = run_bot("parse", "a cat", env={"BOT_CONFIG": str(bad)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: limits.max_jobs_per_prompt")


def test_imagine_writes_a_grid_and_four_pngs_with_their_parameters(tmp_path):
    from PIL import Image

    from generation.builtin.analysis import dominant_colour
    from storage.images import read_parameters

    result = run_bot("imagine", "a red circle on a white background --seed 5 --steps 10", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no library chatter (loading bars, float32 and torchvision notices)
    summary = json.loads(result.stdout)
    assert summary["seeds"] == [5, 6, 7, 8]
    assert summary["params"]["steps"] == 10 and summary["params"]["model"] == "builtin"
    assert [Path(f).name for f in summary["files"]] == ["grid.png", "1.png", "2.png", "3.png", "4.png"]
    with Image.open(tmp_path / "grid.png") as grid, Image.open(tmp_path / "2.png") as second:
        assert grid.size == (128, 128)
        assert dominant_colour(second) == "red"
    parameters = read_parameters(tmp_path / "2.png")
    assert parameters.startswith("a red circle on a white background\nSteps: 10, Sampler: DDIM, CFG scale: 6.0, "
                                 "Seed: 6, Size: 64x64, Model: builtin")


def test_imagine_refuses_a_bad_prompt_with_exit_2(tmp_path):
    result = run_bot("imagine", "a red circle --chaos 300", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--chaos" in result.stderr and "0" in result.stderr and "100" in result.stderr
    assert not list(tmp_path.iterdir())


def test_vary_and_upscale_run_on_an_image_file_with_its_stored_prompt(tmp_path):
    from PIL import Image

    made = run_bot("imagine", "a blue square on a white background --seed 1 --steps 6", "--out", str(tmp_path / "a"))
    assert made.returncode == 0, made.stderr
    source = tmp_path / "a" / "1.png"
    varied = run_bot("vary", str(source), "--strong", "--out", str(tmp_path / "v"))
    assert varied.returncode == 0, varied.stderr
    assert json.loads(varied.stdout)["params"]["strength"] == 0.85
    assert len(list((tmp_path / "v").glob("?.png"))) == 4
    upscaled = run_bot("upscale", str(source), "a blue square --steps 6", "--mode", "creative", "--out",
                       str(tmp_path / "u"))
    assert upscaled.returncode == 0, upscaled.stderr
    with Image.open(tmp_path / "u" / "1.png") as image:
        assert image.size == (128, 128)
    missing = run_bot("vary", str(tmp_path / "nope.png"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "cannot use" in missing.stderr


def config_with_second_version(tmp_path: Path, name: str, **second: object) -> str:
    """config.toml plus a version "second" on the built-in weights with its own defaults."""
    text = (ROOT / "config.toml").read_text().replace(
        'lora_dir = "generation/builtin/loras"', f'lora_dir = "{ROOT / "generation/builtin/loras"}"')
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in second.items())
    path = tmp_path / name
    path.write_text(f'{text}\n[models.versions.second]\nsource = "builtin"\nfamily = "sd15"\n{table}\n')
    return str(path)


def test_vary_without_a_prompt_runs_at_the_settings_the_png_was_made_with(tmp_path):
    """The version, steps, sampler and guidance come from the PNG, even after the operator changed
    the version's defaults; a WebUI PNG's fields are read too; a short upscale still runs a step."""
    from PIL import Image

    from storage.images import encode_png, read_parameters

    before = {"BOT_CONFIG": config_with_second_version(tmp_path, "before.toml", steps=7, sampler="euler")}
    after = {"BOT_CONFIG": config_with_second_version(tmp_path, "after.toml", steps=12, sampler="heun")}
    made = run_bot("imagine", "a blue square, on a white background --v second --s 300 --seed 1", "--out",
                   str(tmp_path / "a"), env=before)
    assert made.returncode == 0, made.stderr
    made_params = json.loads(made.stdout)["params"]
    assert (made_params["steps"], made_params["sampler"]) == (7, "euler")
    assert "Imagine prompt: \"a blue square, on a white background --seed 1 --s 300 --v second\"" in \
        read_parameters(tmp_path / "a" / "1.png")
    varied = run_bot("vary", str(tmp_path / "a" / "1.png"), "--out", str(tmp_path / "v"), env=after)
    assert varied.returncode == 0, varied.stderr
    params = json.loads(varied.stdout)["params"]
    assert (params["model"], params["steps"], params["sampler"], params["cfg"], params["stylize"]) == (
        "second", 7, "euler", made_params["cfg"], 300)

    webui = tmp_path / "webui.png"  # what the WebUI writes: no "Imagine prompt"
    with Image.open(tmp_path / "a" / "1.png") as picture:
        webui.write_bytes(encode_png(picture, "a red circle\nNegative prompt: green\nSteps: 5, Sampler: Euler a, "
                                              "CFG scale: 5.5, Seed: 9, Size: 64x64, Model: second"))
    varied = run_bot("vary", str(webui), "--out", str(tmp_path / "w"), env=after)
    assert varied.returncode == 0, varied.stderr
    params = json.loads(varied.stdout)["params"]
    assert (params["model"], params["steps"], params["sampler"], params["cfg"]) == ("second", 5, "euler_a", 5.5)
    assert read_parameters(tmp_path / "w" / "1.png").startswith("a red circle\nNegative prompt: green\n")

    upscaled = run_bot("upscale", str(tmp_path / "a" / "1.png"), "a blue square --steps 2", "--out",
                       str(tmp_path / "u"))
    assert upscaled.returncode == 0, upscaled.stderr  # int(2 × 0.3) = 0 steps would crash in diffusers
    assert json.loads(upscaled.stdout)["params"]["steps"] == 4


def test_every_image_job_runs_on_files_and_writes_pngs_with_parameters(tmp_path):
    from PIL import Image

    from storage.images import read_parameters

    made = run_bot("imagine", "two yellow stars on a blue background --seed 3 --steps 6", "--out", str(tmp_path / "a"))
    assert made.returncode == 0, made.stderr
    source, other = tmp_path / "a" / "1.png", tmp_path / "a" / "2.png"
    expected = {"zoom": (64, 64), "pan": (80, 64), "square": (64, 64), "region": (64, 64)}
    extra = {"zoom": ["--factor", "1.5"], "pan": ["--direction", "right"], "square": [],
             "region": ["--box", "25,25,75,75"]}
    for command, size in expected.items():
        result = run_bot(command, str(source), *extra[command], "--out", str(tmp_path / command))
        assert result.returncode == 0, result.stderr
        pictures = sorted((tmp_path / command).glob("?.png"))
        assert len(pictures) == 4
        with Image.open(pictures[0]) as picture:
            assert picture.size == size
        assert read_parameters(pictures[0]).startswith("two yellow stars on a blue background")
    blended = run_bot("blend", str(source), str(other), "--dimensions", "landscape", "--out", str(tmp_path / "b"))
    assert blended.returncode == 0, blended.stderr
    with Image.open(tmp_path / "b" / "grid.png") as grid:
        assert grid.width > grid.height
    prompted = run_bot("imagine", "a circle --iw 2 --steps 6", "--image", str(source), "--out", str(tmp_path / "i"))
    assert prompted.returncode == 0, prompted.stderr
    assert json.loads(prompted.stdout)["params"]["strength"] == 0.6
    described = run_bot("describe", str(source))
    assert described.returncode == 0, described.stderr
    suggestions = described.stdout.splitlines()
    assert len(suggestions) == 4 and "blue" in suggestions[0]
    refused = run_bot("blend", str(source), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "2 to 5 pictures" in refused.stderr
    bad_box = run_bot("region", str(source), "--box", "25,25", "--out", str(tmp_path / "x"))
    assert bad_box.returncode == 2 and "four percentages" in bad_box.stderr


def test_train_builtin_refuses_a_device_it_cannot_use(tmp_path, monkeypatch, capsys):
    """A wrong --device stops with a usage error before any data is drawn or written."""
    import torch

    from generation.builtin.train import main as train_main

    result = run_bot("train-builtin", "--device", "gpu0", "--work-dir", str(tmp_path / "a"))
    assert result.returncode == 2
    assert "error: argument --device:" in result.stderr and "'gpu0'" in result.stderr
    assert "Traceback" not in result.stderr

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        train_main(["--device", "cuda", "--work-dir", str(tmp_path / "b")])
    assert stopped.value.code == 2
    assert "--device cuda: this torch" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

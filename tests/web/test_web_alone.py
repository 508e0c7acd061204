"""`scripts/start.sh` with no DISCORD_TOKEN: the web app alone, as a newcomer meets it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def config_for(folder: Path, port: int, bind: str = "127.0.0.1") -> Path:
    """config.toml with this test's data folder and port."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    for old, new in (('database_url = "sqlite+aiosqlite:///data/bot.db"',
                      f'database_url = "sqlite+aiosqlite:///{folder}/bot.db"'),
                     ('image_dir = "data/images"', f'image_dir = "{folder}/images"'),
                     ('lora_dir = "generation/builtin/loras"', f'lora_dir = "{ROOT}/generation/builtin/loras"'),
                     ("port = 8080", f"port = {port}"), ('bind = "127.0.0.1"\nport', f'bind = "{bind}"\nport')):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def start(config: Path) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"} | {"BOT_CONFIG": str(config)}
    return subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=environment, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_without_a_token_the_web_app_runs_alone_on_loopback_and_says_so_in_one_line(tmp_path):
    port = free_port()
    with start(config_for(tmp_path, port, bind="0.0.0.0")) as process:  # loopback all the same: nobody signs in
        try:
            line = process.stderr.readline()
            assert line == (f"DISCORD_TOKEN is not set: the web app alone at http://127.0.0.1:{port} (one local "
                            "user, nothing to sign in to; export DISCORD_TOKEN=<your bot token> to run the Discord "
                            "bot with it).\n")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                page = response.read().decode()
            assert response.status == 200 and "<h1>Imagine</h1>" in page and "local user" in page
            cookie = response.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=lax" in cookie
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)
            assert "Traceback" not in process.stderr.read()
        finally:
            process.kill()


def test_a_port_already_taken_is_said_in_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with start(config_for(tmp_path, port)) as process:
            assert process.wait(timeout=120) == 2
            error = process.stderr.read()
    assert error.startswith(f"error: the web app cannot listen on 127.0.0.1:{port} (Address already in use): set "
                            "another [web] port in config.toml, or stop what uses it")
    assert "Traceback" not in error and time.monotonic() - started < 120


def test_a_second_bot_on_the_same_data_stops_at_once_and_changes_nothing(tmp_path):
    port = free_port()
    config = config_for(tmp_path, port)
    with start(config) as first:
        try:
            assert first.stderr.readline().startswith("DISCORD_TOKEN is not set: the web app alone at")
            with start(config) as second:
                assert second.wait(timeout=120) == 2
                error = second.stderr.read()
            assert error == (f"error: another bot process is running on {tmp_path} (its database and pictures): "
                             "stop it first, or give this one another [storage] in its own config.toml\n")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                assert response.status == 200  # the first one serves on
        finally:
            first.kill()

"""The built-in model: a tiny text-to-image model trained by the project on coloured shapes.

It lets the bot, the CLI and the tests make real pictures on any machine with nothing
downloaded, and lets tests check what a prompt means (does `--no red` remove red?).
See MODEL_CARD.md beside this file.
"""

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent
MODEL_DIR = BUILTIN_DIR / "model"
LORA_DIR = BUILTIN_DIR / "loras"

"""`python -m bot <command>`: run the bot, or use the project without Discord.

Commands that do not generate (parse) import neither torch nor diffusers nor
discord.py, so they answer at once; heavier imports happen inside the command that
needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bot.config import TOKEN_ENV, ConfigError, load_settings

EXIT_USAGE = 2


def _cmd_parse(args: argparse.Namespace) -> int:
    from generation.catalog import list_loras
    from generation.prompt import PromptError, parse_prompt
    from generation.validation import validate_request

    settings = load_settings()
    try:
        jobs = parse_prompt(args.prompt, settings.limits)
        if args.check:
            loras = list_loras(settings.catalog.lora_dir)
            jobs = [validate_request(job, settings.catalog, available_loras=loras) for job in jobs]
    except PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"jobs": [job.to_dict() for job in jobs]}, ensure_ascii=False))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(f"{TOKEN_ENV} is not set: run `export {TOKEN_ENV}=<your bot token>` and start again "
              f"(without Discord, try `python -m bot parse \"a red circle --ar 16:9\"` "
              f"or `python -m bot --help`).", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    import discord

    from bot.bot import ImagineBot

    try:
        ImagineBot(settings).run(token, root_logger=True)
    except discord.LoginFailure:
        print(f"Discord refused the token in {TOKEN_ENV}: copy it again from the developer portal "
              "(Bot > Reset Token) and export it.", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, discord.GatewayNotFound) as error:  # aiohttp's connection errors are OSErrors
        print(f"could not reach Discord ({type(error).__name__}): check this machine's network and try again.",
              file=sys.stderr)
        return EXIT_USAGE
    except discord.PrivilegedIntentsRequired:
        print("Discord refused the intents this bot asks for: enable them for the bot in the developer portal.",
              file=sys.stderr)
        return EXIT_USAGE
    return 0


def _cmd_train_builtin(args: argparse.Namespace) -> int:
    from generation.builtin.train import main as train_main

    train_main(args.train_args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="A Midjourney-style Discord bot "
                                     "on open diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = commands.add_parser("run", help=f"start the Discord bot (token from ${TOKEN_ENV})")
    run.set_defaults(handler=_cmd_run)

    parse = commands.add_parser("parse", help="show how a prompt is understood, as JSON")
    parse.add_argument("prompt", help='for example "a lighthouse at dusk --ar 16:9 --no fog"')
    parse.add_argument("--check", action="store_true",
                       help="also check it against config.toml (versions, niji, styles, samplers, LoRAs)")
    parse.set_defaults(handler=_cmd_parse)

    # its own options (--phase, --work-dir, --help) are read by the trainer
    train = commands.add_parser("train-builtin", help="retrain the built-in model (about 90 minutes on 2 cores)",
                                add_help=False)
    train.set_defaults(handler=_cmd_train_builtin)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.handler is _cmd_train_builtin:
        args.train_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

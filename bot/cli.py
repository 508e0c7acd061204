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


def _cmd_sync(args: argparse.Namespace) -> int:
    import asyncio

    import discord

    from bot.bot import sync_commands

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(f"{TOKEN_ENV} is not set: run `export {TOKEN_ENV}=<your bot token>` and sync again.", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    guild_id = args.guild if args.guild is not None else None if args.everywhere else settings.discord.sync_guild_id
    try:
        names = asyncio.run(sync_commands(settings, token, guild_id))
    except discord.LoginFailure:
        print(f"Discord refused the token in {TOKEN_ENV}: copy it again from the developer portal.", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, discord.HTTPException) as error:
        print(f"could not sync the commands ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    where = f"to server {guild_id} (available at once)" if guild_id else "globally (may take up to an hour to show)"
    print(f"synced {len(names)} commands {where}: {', '.join('/' + name for name in sorted(names))}")
    return 0


def _load_requests(prompt: str, settings) -> list:
    """Parse and validate like the bot does; PromptError on bad input."""
    from generation.catalog import list_loras
    from generation.prompt import PromptError, parse_prompt
    from generation.validation import validate_request

    loras = list_loras(settings.catalog.lora_dir)
    requests = [validate_request(job, settings.catalog, available_loras=loras)
                for job in parse_prompt(prompt, settings.limits)]
    if any(request.image_urls for request in requests):
        raise PromptError("image prompts are not supported on the command line yet: remove the image link")
    return requests


def _progress_bar(description: str):
    """A terminal progress bar fed by the engine's Progress events (silent when not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=description, unit="step", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

    def report(event) -> None:
        bar.total = event.total
        bar.n = event.step
        bar.refresh()
    return bar, report


def _write_png(path, image, parameters: str) -> str:
    from storage.images import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image, parameters))
    return str(path)


def _engine(settings):
    import torch

    from generation.engine import Engine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Engine(settings.catalog, device=device, dtype=torch.float16 if device == "cuda" else torch.float32)


def _summary(result, files: list[str]) -> str:
    return json.dumps({"seeds": list(result.seeds), "params": result.parameters, "files": files,
                       "seconds": round(result.timings.get("total", 0.0), 2)}, ensure_ascii=False)


def _cmd_imagine(args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    from generation.engine import Imagine
    from generation.imaging import make_grid
    from generation.prompt import PromptError

    settings = load_settings()
    try:
        requests = _load_requests(args.prompt, settings)
    except PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    engine = _engine(settings)
    out = Path(args.out)
    for number, request in enumerate(requests, start=1):
        seed = request.params.seed if request.params.seed is not None else secrets.randbelow(2**32)
        folder = out if len(requests) == 1 else out / f"job-{number}"
        bar, report = _progress_bar(f"job {number}/{len(requests)}")
        with bar:
            result = engine.run(Imagine(request, seed), report=report)
        files = [_write_png(folder / f"{index}.png", image, text)
                 for index, (image, text) in enumerate(zip(result.images, result.infotexts, strict=True), start=1)]
        files.insert(0, _write_png(folder / "grid.png", make_grid(result.images), result.infotexts[0]))
        print(_summary(result, files), flush=True)
    return 0


def _cmd_from_image(args: argparse.Namespace) -> int:
    """`vary` and `upscale`: a job that starts from an image file."""
    import secrets
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    from generation.engine import Upscale, Vary
    from generation.prompt import PromptError
    from storage.images import read_parameters

    settings = load_settings()
    source_path = Path(args.image)
    try:
        with Image.open(source_path) as opened:
            source = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        print(f"error: cannot read {source_path} as an image ({error})", file=sys.stderr)
        return EXIT_USAGE
    prompt = args.prompt
    if prompt is None:  # the prompt the picture was made with, from its PNG parameters
        stored = read_parameters(source_path)
        if not stored:
            print("error: this image carries no prompt: give one after the file name", file=sys.stderr)
            return EXIT_USAGE
        prompt = stored.splitlines()[0]
    try:
        requests = _load_requests(prompt, settings)
    except PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    request = requests[0]
    seed = request.params.seed if request.params.seed is not None else secrets.randbelow(2**32)
    if args.command == "vary":
        job = Vary(request, source, seed, variability="strong" if args.strong else "subtle")
    else:
        job = Upscale(request, source, seed, mode=args.mode)
    bar, report = _progress_bar(args.command)
    with bar:
        result = _engine(settings).run(job, report=report)
    out = Path(args.out)
    files = [_write_png(out / f"{index}.png", image, text)
             for index, (image, text) in enumerate(zip(result.images, result.infotexts, strict=True), start=1)]
    if len(result.images) > 1:
        from generation.imaging import make_grid

        files.insert(0, _write_png(out / "grid.png", make_grid(result.images), result.infotexts[0]))
    print(_summary(result, files), flush=True)
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

    sync = commands.add_parser("sync", help="register the slash commands with Discord (after adding or changing "
                                           "commands; not needed on every start)")
    where = sync.add_mutually_exclusive_group()
    where.add_argument("--guild", type=int, metavar="ID",
                       help="only this server, shown at once (default: [discord] sync_guild_id in config.toml)")
    where.add_argument("--everywhere", action="store_true", help="globally, even when sync_guild_id is set")
    sync.set_defaults(handler=_cmd_sync)

    parse = commands.add_parser("parse", help="show how a prompt is understood, as JSON")
    parse.add_argument("prompt", help='for example "a lighthouse at dusk --ar 16:9 --no fog"')
    parse.add_argument("--check", action="store_true",
                       help="also check it against config.toml (versions, niji, styles, samplers, LoRAs)")
    parse.set_defaults(handler=_cmd_parse)

    imagine = commands.add_parser("imagine", help="make a grid of 4 from a prompt, without Discord")
    imagine.add_argument("prompt", help='for example "a red circle on a white background --ar 16:9 --seed 7"')
    imagine.add_argument("--out", required=True, help="folder for grid.png and 1.png-4.png (made if missing)")
    imagine.set_defaults(handler=_cmd_imagine)

    vary = commands.add_parser("vary", help="4 variations of an image file (V1-V4, Vary Subtle/Strong)")
    vary.add_argument("image", help="a picture file (a PNG made by this project carries its prompt)")
    vary.add_argument("prompt", nargs="?", help="the prompt (default: the one stored in the PNG)")
    strength = vary.add_mutually_exclusive_group()
    strength.add_argument("--subtle", action="store_true", help="stay close to the image (default)")
    strength.add_argument("--strong", action="store_true", help="move further from it")
    vary.add_argument("--out", required=True, help="folder for grid.png and 1.png-4.png")
    vary.set_defaults(handler=_cmd_from_image)

    upscale = commands.add_parser("upscale", help="an image file at twice the size")
    upscale.add_argument("image", help="a picture file (a PNG made by this project carries its prompt)")
    upscale.add_argument("prompt", nargs="?", help="the prompt (default: the one stored in the PNG)")
    upscale.add_argument("--mode", choices=("subtle", "creative"), default="subtle",
                         help="subtle keeps the content; creative may add detail")
    upscale.add_argument("--out", required=True, help="folder for 1.png")
    upscale.set_defaults(handler=_cmd_from_image)

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

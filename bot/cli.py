"""`python -m bot <command>`: run the bot, or use the project without Discord.

Commands that do not generate (parse) import neither torch nor diffusers nor
discord.py, so they answer at once; heavier imports happen inside the command that
needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from bot.config import TOKEN_ENV, ConfigError, load_settings

EXIT_USAGE = 2  # a missing or refused token, a bad config: starting again will not help
EXIT_UNAVAILABLE = 69  # Discord could not be reached: worth another try (sysexits' EX_UNAVAILABLE)
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}


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


def _quiet_libraries() -> None:
    """diffusers' and transformers' bars and notices into the log, before either is imported."""
    from generation.library_logs import route_library_logs

    route_library_logs()


def _token() -> str | None:
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _cmd_run(args: argparse.Namespace) -> int:
    """The bot under its supervisor (bot/supervisor.py), which restarts it and tells it why it stopped;
    without a token, the web app alone (`serve` decides)."""
    load_settings()  # a bad config.toml is reported here, once, not by a child restarted in a loop
    import logging

    from bot.supervisor import supervise

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return supervise([sys.executable, "-m", "bot", "serve"])


def _cmd_serve(args: argparse.Namespace) -> int:
    """The bot itself, in this process (`run` starts it; run it alone only under another supervisor)."""
    settings = load_settings()
    _quiet_libraries()
    started_file = Path(args.started_file) if args.started_file else None
    if (token := _token()) is None:
        return _serve_web_alone(settings, args, started_file)
    import aiohttp
    import discord

    from bot.bot import DataFolderBusy, ImagineBot
    from bot.supervisor import PreviousExit

    try:
        ImagineBot(settings, previous_exit=PreviousExit(args.previous_exit), started_file=started_file).run(
            token, root_logger=True)
    except DataFolderBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except discord.LoginFailure:
        print(f"Discord refused the token in {TOKEN_ENV}: copy it again from the developer portal "
              "(Bot > Reset Token) and export it.", file=sys.stderr)
        return EXIT_USAGE
    except (aiohttp.ClientError, ConnectionError, TimeoutError, discord.GatewayNotFound) as error:
        print(f"could not reach Discord ({type(error).__name__}): check this machine's network and try again.",
              file=sys.stderr)
        return EXIT_UNAVAILABLE  # the supervisor tries again, more slowly each time
    except discord.PrivilegedIntentsRequired:
        print("Discord refused the intents this bot asks for: enable them for the bot in the developer portal.",
              file=sys.stderr)
        return EXIT_USAGE
    return 0


def _serve_web_alone(settings, args: argparse.Namespace, started_file: Path | None) -> int:
    """No token: the web app alone, on loopback, for one local user (docs/web.md)."""
    import asyncio

    from bot.bot import DataFolderBusy, serve_web_alone
    from bot.supervisor import PreviousExit
    from web.server import WebUnavailable

    def announce(url: str) -> None:
        print(f"{TOKEN_ENV} is not set: the web app alone at {url} (one local user, nothing to sign in to; "
              f"export {TOKEN_ENV}=<your bot token> to run the Discord bot with it).", file=sys.stderr, flush=True)
    try:
        asyncio.run(serve_web_alone(settings, previous_exit=PreviousExit(args.previous_exit),
                                    started_file=started_file, on_ready=announce))
    except (WebUnavailable, DataFolderBusy) as error:
        print(f"error: {error}", file=sys.stderr)
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


def _load_requests(prompt: str, settings, attached: tuple[str, ...] = ()) -> list:
    """Parse and validate like the bot does; PromptError on bad input. `attached` image
    prompts (files here, attachments in Discord) join the links the prompt starts with."""
    from dataclasses import replace

    from generation.catalog import list_loras
    from generation.prompt import parse_prompt
    from generation.validation import validate_request

    loras = list_loras(settings.catalog.lora_dir)
    return [validate_request(replace(job, image_urls=job.image_urls + attached), settings.catalog,
                             available_loras=loras)
            for job in parse_prompt(prompt, settings.limits)]


def _read_picture(path: str, settings):
    """A picture file, with the same format and size checks as a link."""
    from pathlib import Path

    from bot.fetch import decode_image

    return decode_image(Path(path).read_bytes(), settings.images, path).image


def _fetch_pictures(urls: list[str], settings) -> list:
    import asyncio

    from bot.fetch import fetch_image, make_session

    async def fetch_all() -> list:
        async with make_session(settings.images) as session:
            return [(await fetch_image(session, url, settings.images)).image for url in urls]
    return asyncio.run(fetch_all())


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
    """`imagine`: a grid from a prompt; image prompts from links in it or from --image files."""
    _quiet_libraries()
    from pathlib import Path

    from bot.fetch import FetchError
    from generation.engine import Imagine
    from generation.prompt import PromptError

    settings = load_settings()
    files = tuple(Path(name).resolve().as_uri() for name in args.image)
    try:
        requests = _load_requests(args.prompt, settings, attached=files)
        links = [url for url in requests[0].image_urls if url not in files]
        pictures = (_fetch_pictures(links, settings) if links else []) + [_read_picture(name, settings)
                                                                          for name in args.image]
    except (PromptError, FetchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    engine = _engine(settings)
    for number, request in enumerate(requests, start=1):
        job = Imagine(request, _seed(request), images=tuple(pictures))
        folder = _out(args.out, number, len(requests))
        _run_and_write(engine, job, folder, f"job {number}/{len(requests)}")
    return 0


def _seed(request) -> int:
    import secrets

    return request.params.seed if request.params.seed is not None else secrets.randbelow(2**32)


def _out(folder: str, number: int, count: int):
    from pathlib import Path

    return Path(folder) if count == 1 else Path(folder) / f"job-{number}"


def _run_and_write(engine, job, folder, description: str) -> None:
    """Run one engine job with a progress bar; write grid.png (several pictures) and 1.png, 2.png..."""
    from generation.imaging import make_grid

    bar, report = _progress_bar(description)
    with bar:
        result = engine.run(job, report=report)
    files = [_write_png(folder / f"{index}.png", image, text)
             for index, (image, text) in enumerate(zip(result.images, result.infotexts, strict=True), start=1)]
    if len(result.images) > 1:
        files.insert(0, _write_png(folder / "grid.png", make_grid(result.images), result.infotexts[0]))
    print(_summary(result, files), flush=True)


def prompt_from_parameters(parameters: str, settings) -> str:
    """The prompt a PNG's `parameters` were made from, with the version, steps, sampler and
    guidance it ran at added where the prompt left them to the configuration (which may
    have changed since). A WebUI PNG gives its prompt, negative prompt (as `--no`) and fields."""
    from generation.infotext import PROMPT_FIELD, parse_infotext
    from generation.prompt import parse_prompt
    from generation.samplers import WEBUI_LABELS

    stored = parse_infotext(parameters)
    prompt = stored.fields.get(PROMPT_FIELD)
    if prompt is None:
        prompt = stored.prompt + (f" --no {stored.negative}" if stored.negative else "")
    params = parse_prompt(prompt, settings.limits)[0].params
    fields, added = stored.fields, []
    if params.version is None and params.niji is None and fields.get("Model") in settings.catalog.versions:
        added.append(f"--v {fields['Model']}")
    if params.steps is None and fields.get("Steps", "").isdigit():
        added.append(f"--steps {fields['Steps']}")
    if params.cfg is None and re.fullmatch(r"\d+(\.\d+)?", fields.get("CFG scale", "")):
        added.append(f"--cfg {fields['CFG scale']}")
    sampler = {label: name for name, label in WEBUI_LABELS.items()}.get(fields.get("Sampler", ""))
    if params.sampler is None and sampler is not None:
        added.append(f"--sampler {sampler}")
    return " ".join([prompt, *added])


def _parse_box(text: str) -> tuple[float, float, float, float]:
    """`25,25,75,75` (percent of the width and height: left, top, right, bottom)."""
    parts = [float(part) / 100 for part in text.replace(" ", "").split(",")]
    if len(parts) != 4:
        raise ValueError("--box takes four percentages: left,top,right,bottom (for example 25,25,75,75)")
    return parts[0], parts[1], parts[2], parts[3]


def _cmd_from_image(args: argparse.Namespace) -> int:
    """`vary`, `upscale`, `zoom`, `pan`, `square`, `region`: a job that starts from an image file."""
    _quiet_libraries()
    from generation.engine import Outpaint, Repaint, Upscale, Vary
    from generation.prompt import PromptError
    from storage.images import read_parameters

    settings = load_settings()
    try:
        source = _read_picture(args.image, settings)
    except Exception as error:  # FetchError or OSError: either way the file cannot be used
        print(f"error: cannot use {args.image} as a picture ({error})", file=sys.stderr)
        return EXIT_USAGE
    prompt = args.prompt
    try:
        if prompt is None:  # the prompt the picture was made with, and the settings it ran at
            stored = read_parameters(args.image)
            if not stored:
                print("error: this image carries no prompt: give one after the file name", file=sys.stderr)
                return EXIT_USAGE
            prompt = prompt_from_parameters(stored, settings)
        request = _load_requests(prompt, settings)[0]
        seed = _seed(request)
        match args.command:
            case "vary":
                job = Vary(request, source, seed, variability="strong" if args.strong else "subtle")
            case "upscale":
                job = Upscale(request, source, seed, mode=args.mode)
            case "zoom":
                if not 1.0 <= args.factor <= 2.0:
                    raise ValueError("--factor must be between 1 and 2")
                job = Outpaint(request, source, seed, kind="zoom", factor=args.factor)
            case "pan":
                job = Outpaint(request, source, seed, kind="pan", direction=args.direction)
            case "square":
                job = Outpaint(request, source, seed, kind="square")
            case _:
                job = Repaint(request, source, seed, box=_parse_box(args.box))
    except (PromptError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from pathlib import Path

    _run_and_write(_engine(settings), job, Path(args.out), args.command)
    return 0


def _cmd_blend(args: argparse.Namespace) -> int:
    """`blend`: 2–5 picture files into one grid."""
    _quiet_libraries()
    from pathlib import Path

    from generation.engine import Blend
    from generation.prompt import GenerationRequest, Params, PromptError

    settings = load_settings()
    if not 2 <= len(args.images) <= 5:
        print("error: blend takes 2 to 5 pictures", file=sys.stderr)
        return EXIT_USAGE
    try:
        pictures = tuple(_read_picture(name, settings) for name in args.images)
        aspect = BLEND_DIMENSIONS[args.dimensions]
        if args.prompt:
            request = _load_requests(f"{args.prompt} --ar {aspect}", settings)[0]
        else:
            request = GenerationRequest((), Params(aspect=aspect))
    except (PromptError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _run_and_write(_engine(settings), Blend(request, pictures, _seed(request)), Path(args.out), "blend")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    """`describe`: four prompts for a picture file, one per line."""
    _quiet_libraries()
    from generation.describe import load_describer

    settings = load_settings()
    try:
        picture = _read_picture(args.image, settings)
        describer = load_describer(settings.catalog.describe_model)
    except Exception as error:  # FetchError, OSError: the picture or the captioner cannot be used
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for suggestion in describer.suggestions(picture):
        print(suggestion)
    return 0


def _cmd_train_builtin(args: argparse.Namespace) -> int:
    from generation.builtin.train import main as train_main

    train_main(args.train_args)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import torch

    from bot.worker import serve

    settings = load_settings()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.name):
        raise SystemExit("--name: 1 to 64 letters, digits, dots, dashes or underscores")
    serve(settings, args.broker or settings.queue.broker_url, device, models, args.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="A Midjourney-style Discord bot "
                                     "on open diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = commands.add_parser("run", help=f"start the Discord bot (token from ${TOKEN_ENV}) and the web app, restarted "
                                              "if it crashes; without a token, the web app alone")
    run.set_defaults(handler=_cmd_run)
    serve = commands.add_parser("serve", help="the bot alone, without the supervisor `run` puts around it")
    serve.add_argument("--previous-exit", choices=["crashed", "killed", "unknown"], default="unknown",
                       help="how the last run ended (the supervisor says): a crash is blamed on its running job")
    serve.add_argument("--started-file", help="touched once the job queue is up (for the supervisor)")
    serve.set_defaults(handler=_cmd_serve)

    worker = commands.add_parser("worker", help="a GPU worker: runs jobs from the Redis broker "
                                                "([queue] broker_url or $IMAGINE_BROKER_URL), one at a time")
    worker.add_argument("--device", help="cuda:0, cuda:1... or cpu (default: cuda when there is one)")
    worker.add_argument("--models", default="", help="versions to load at start, comma-separated (builtin,1.5)")
    worker.add_argument("--broker", help="the broker's URL, instead of the config's")
    worker.add_argument("--name", help="the worker's name, unique among the workers (default: host-device)")
    worker.set_defaults(handler=_cmd_worker)

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
    imagine.add_argument("prompt", help='for example "a red circle on a white background --ar 16:9 --seed 7" '
                                        '(image links at the start are fetched like the bot fetches them)')
    imagine.add_argument("--image", action="append", default=[], metavar="FILE",
                         help="an image prompt from a file (repeat for several; --iw sets how strongly)")
    imagine.add_argument("--out", required=True, help="folder for grid.png and 1.png-4.png (made if missing)")
    imagine.set_defaults(handler=_cmd_imagine)

    def image_command(name: str, help_text: str, out_help: str = "folder for grid.png and 1.png-4.png"):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("image", help="a picture file (a PNG made by this project carries its prompt)")
        command.add_argument("prompt", nargs="?", help="the prompt (default: the one stored in the PNG, with "
                             "the version, steps, sampler and guidance it was made with)")
        command.add_argument("--out", required=True, help=out_help)
        command.set_defaults(handler=_cmd_from_image)
        return command

    vary = image_command("vary", "4 variations of an image file (V1-V4, Vary Subtle/Strong)")
    strength = vary.add_mutually_exclusive_group()
    strength.add_argument("--subtle", action="store_true", help="stay close to the image (default)")
    strength.add_argument("--strong", action="store_true", help="move further from it")
    upscale = image_command("upscale", "an image file at twice the size", "folder for 1.png")
    upscale.add_argument("--mode", choices=("subtle", "creative"), default="subtle",
                         help="subtle keeps the content; creative may add detail")
    zoom = image_command("zoom", "Zoom Out: the picture shrinks into the centre, the border is painted")
    zoom.add_argument("--factor", type=float, default=2.0, help="1 to 2 (default 2; Midjourney's 1.5 too)")
    pan_command = image_command("pan", "Pan: the canvas grows by 30%% on one side, the picture is kept")
    pan_command.add_argument("--direction", choices=("left", "right", "up", "down"), default="right")
    image_command("square", "Make Square: a non-square picture grows to a square")
    region = image_command("region", "Vary (Region): only a rectangle is painted again (with a new prompt, "
                                     "if given)")
    region.add_argument("--box", required=True, help="left,top,right,bottom in percent, e.g. 25,25,75,75")

    blend = commands.add_parser("blend", help="/blend: 2 to 5 picture files mixed into one grid")
    blend.add_argument("images", nargs="+", help="2 to 5 picture files")
    blend.add_argument("--dimensions", choices=tuple(BLEND_DIMENSIONS), default="square")
    blend.add_argument("--prompt", help="words that steer the blend (optional)")
    blend.add_argument("--out", required=True, help="folder for grid.png and 1.png-4.png")
    blend.set_defaults(handler=_cmd_blend)

    describe = commands.add_parser("describe", help="/describe: four prompts for a picture file")
    describe.add_argument("image", help="a picture file")
    describe.set_defaults(handler=_cmd_describe)

    # its own options (--phase, --work-dir, --device, --help) are read by the trainer
    train = commands.add_parser("train-builtin", help="retrain the built-in model (about 2 hours on 2 cores; "
                                "--device cuda for a GPU)",
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

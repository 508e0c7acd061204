"""The web app: a second front end over the bot's job service (docs/web.md)."""

"""The Discord bot: the Bot subclass, start-up, configuration and the command line."""

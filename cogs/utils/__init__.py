"""Helpers the cogs share: persistent buttons, message delivery, message texts."""

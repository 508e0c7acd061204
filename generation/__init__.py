"""Prompt language, requests, scheduling and image generation (no Discord, no database)."""

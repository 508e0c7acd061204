"""One cog per user surface: imagine/blend, buttons, reactions, history, settings, info."""

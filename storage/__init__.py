"""Database models, repository functions, migrations and the image file store."""

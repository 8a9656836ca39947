"""Configuration: the one options table, its value parsers and the typed settings. Imports nothing of
ours."""

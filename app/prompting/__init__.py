"""Prompt handling (expansion, translation, styles). Not implemented yet: prompts are
used as typed and recorded in ``records.prompt`` / ``records.prompt_used``."""

"""Prompt handling: expansion (the offline expander, an optional local model, and the
OpenAI/Gemini LLM expanders), translation, style presets, idea themes and exports."""

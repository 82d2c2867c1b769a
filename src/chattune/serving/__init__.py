"""Serving: wire protocol (Azure /score, OpenAI chat completions), the engine, and the instance app."""

"""Engines: one narrow protocol over inference servers (llama.cpp, vLLM, any OpenAI-compatible command)."""

"""qwen-edge serve: an OpenAI-compatible local server with continuous batching (server/app.py, server/scheduler.py)."""

"""A fake OpenAI/Anthropic server for the LLM integration tests."""

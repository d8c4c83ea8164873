"""The offline test kit users get: fake OpenAI endpoint, OTLP receiver, pytest plugin."""

"""Governed calls beside other GenAI instrumentations (one of them in a venv of its own)."""

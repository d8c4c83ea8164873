"""Code the tests share (helpers, builders, assertions); tests import it, it never imports a test module."""

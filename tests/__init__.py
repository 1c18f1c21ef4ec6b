"""The test suite, a package so that its modules, bench/ and pytest import shared code as ``tests.support``."""

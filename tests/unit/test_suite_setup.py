"""The suite's own setup: a hung test fails, and pytest leaves third-party packages alone.

Why the second: pytest's assertion rewriter parses (`ast.parse`) every module it rewrites when that module is
first imported, and by default it rewrites every module of every distribution that registers a pytest plugin —
schemathesis and hypothesis among them. Both import modules lazily while a test runs (the OpenAPI fuzz test
does), with the hub's NATS-loop and health-probe threads alive. CPython before 3.11.8 keeps the AST builder's
recursion counter per interpreter instead of per thread (python/cpython#106905), so a traceback formatted at
that moment (3.11's traceback module parses source lines to place its ^^^ markers) made the import fail with
`SystemError: AST constructor recursion depth mismatch`. setup.cfg therefore names its plugins
(`--disable-plugin-autoload -p pytest_timeout`): third-party modules are imported as they are, never parsed.
"""

import sys

from _pytest.assertion.rewrite import AssertionRewritingHook


def test_a_hung_test_fails_after_a_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("pytest_timeout")
    assert 60 <= float(pytestconfig.getini("timeout")) <= 900


def test_third_party_plugin_packages_are_not_rewritten_but_our_tests_are():
    import hypothesis.strategies._internal.regex
    import schemathesis.transport.wsgi

    for module in (schemathesis.transport.wsgi, hypothesis.strategies._internal.regex):
        assert not isinstance(module.__loader__, AssertionRewritingHook), module.__name__
    assert isinstance(sys.modules[__name__].__loader__, AssertionRewritingHook)  # our asserts keep their detail

"""The suite's own setup: a hung test fails, `ast.parse` is safe from two threads, and pytest leaves third-party
packages alone.

Why the last two: CPython before 3.11.8 keeps the AST builder's recursion counter per interpreter instead of per
thread (python/cpython#106905). While the OpenAPI fuzz test ran, the main thread parsed a lot — hypothesis and
schemathesis parse predicates and module sources, and pytest parsed every schemathesis or hypothesis module that
was first imported mid-test, since it rewrites all modules of every package that registers a plugin — and the
hub's NATS-loop and health-probe threads could format a traceback at the same moment (Python 3.11 parses the
failing line to place its ^^^ markers): `SystemError: AST constructor recursion depth mismatch`.
tests/support/ast_guard.py serialises `ast.parse` in the test process, and setup.cfg names its plugins
(`--disable-plugin-autoload -p pytest_timeout`), so third-party modules are imported without being parsed.
"""

import ast
import gc
import pathlib
import sys
import threading
import time
import traceback

from _pytest.assertion.rewrite import AssertionRewritingHook

from tests.support import ast_guard


def test_a_hung_test_fails_after_a_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("pytest_timeout")
    assert 60 <= float(pytestconfig.getini("timeout")) <= 900


def test_third_party_plugin_packages_are_not_rewritten_but_our_tests_are():
    import hypothesis.strategies._internal.regex
    import schemathesis.transport.wsgi

    for module in (schemathesis.transport.wsgi, hypothesis.strategies._internal.regex):
        assert not isinstance(module.__loader__, AssertionRewritingHook), module.__name__
    assert isinstance(sys.modules[__name__].__loader__, AssertionRewritingHook)  # our asserts keep their detail


def test_parsing_while_another_thread_formats_tracebacks_is_safe():
    """The race itself: a thread formatting tracebacks non-stop while this one parses a large module, with a gc
    callback that releases the GIL, so the other thread runs in the middle of building each AST. Unguarded on
    CPython 3.11.7, every one of these parses fails."""
    assert getattr(ast.parse, "serialised", False) == ast_guard.needed()
    source = pathlib.Path(ast.__file__).read_text()
    stop, errors = threading.Event(), []

    def format_tracebacks():
        while not stop.is_set():
            try:
                1 / 0  # noqa: B018 - raised by an expression: formatting its traceback parses this line
            except ZeroDivisionError as exc:
                try:
                    traceback.format_exception(exc)
                except SystemError as error:
                    errors.append(error)

    def switch_threads(phase, info):
        time.sleep(0)  # releases the GIL: the other thread gets to run

    gc.callbacks.append(switch_threads)
    noise = threading.Thread(target=format_tracebacks, daemon=True)
    noise.start()
    try:
        for _ in range(10):
            try:
                ast.parse(source)
            except SystemError as error:
                errors.append(error)
    finally:
        stop.set()
        noise.join(10)
        gc.callbacks.remove(switch_threads)
    assert errors == []


def test_the_shells_hub_configuration_never_reaches_the_suite():
    """conftest.py scrubs the hub's variables at import; the suite's own knobs survive."""
    import os

    from tests.support.environment import scrub_hub_configuration

    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "RATE_LIMIT_BURST": "5", "UAIP_PUBLIC_URL": "https://x",
               "JWT_SECRET": "s", "DATABASE_URL": "postgresql://x", "UAIP_TEST_ALLOW_NO_PROMTOOL": "1",
               "UAIP_IMAGE_CONTEXT": "/x", "UAIP_CHECKOV": "/bin/checkov", "PATH": "/bin", "CI": "true"}
    removed = scrub_hub_configuration(environ)
    assert removed == ["DATABASE_URL", "JWT_SECRET", "OTEL_EXPORTER_OTLP_ENDPOINT", "RATE_LIMIT_BURST",
                       "UAIP_PUBLIC_URL"]
    assert set(environ) == {"UAIP_TEST_ALLOW_NO_PROMTOOL", "UAIP_IMAGE_CONTEXT", "UAIP_CHECKOV", "PATH", "CI"}
    assert not [name for name in os.environ if name.startswith(("OTEL_", "RATE_LIMIT_"))]


def test_no_assert_all_can_pass_on_nothing():
    """Every `assert all(` in the suite iterates through `nonempty(...)` (tests/support/asserting.py): an empty
    iterable would make it pass while the feature it checks is broken."""
    import re
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    vacuous = []
    for path in sorted(tests.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for match in re.finditer(r"assert all\((?:[^()]|\([^()]*\))*?(?:\)|$)", source, re.M | re.S):
            statement = source[match.start():source.find("\n\n", match.start())]
            if "nonempty(" not in statement.split("assert", 2)[1]:
                line = source.count("\n", 0, match.start()) + 1
                vacuous.append(f"{path.relative_to(tests)}:{line}")
    assert not [v for v in vacuous if not v.startswith("unit/test_suite_setup.py")], vacuous


def test_nonempty_refuses_nothing():
    import pytest

    from tests.support.asserting import nonempty

    assert nonempty(x for x in (1, 2)) == [1, 2]
    with pytest.raises(AssertionError):
        nonempty([])

"""pytest_test: a py_test that runs one pytest file through the shared pytest_runner.py."""

def pytest_test(name, deps = [], data = [], **kwargs):
    """Runs pytest on `<name>.py`, with the fixtures of conftest.py.

    Args:
      name: the test file's name without `.py`.
      deps: the //forging_tf libraries the file imports.
      data: the //forging_tf binaries the file starts as `python -m forging_tf.<binary>`.
      **kwargs: size, timeout, tags, ... as for py_test.
    """
    native.py_test(
        name = name,
        srcs = [name + ".py", "pytest_runner.py"],
        main = "pytest_runner.py",
        args = ["$(rootpath %s.py)" % name],
        data = ["//:pytest.ini"] + data,
        deps = [":conftest"] + deps,
        **kwargs
    )

def check_every_test_file_has_a_target():
    """Fails loading tests/BUILD when a test_*.py file has no pytest_test, so none is skipped."""
    missing = [f for f in native.glob(["test_*.py"]) if not native.existing_rule(f[:-len(".py")])]
    if missing:
        fail("no pytest_test in tests/BUILD for %s" % ", ".join(missing))

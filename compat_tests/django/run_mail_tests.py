"""Run Django's own SMTP backend tests, with ``smtplib`` or with anysmtp.

Usage: ``python -m compat_tests.django.run_mail_tests {smtplib,anysmtp}``, from
the repository's root.  With ``anysmtp``, the first thing the process does is
``sys.modules["smtplib"] = anysmtp``: Django's backend (``import smtplib``) and
Django's tests (``from smtplib import SMTP, SMTPException``, and a test that
replaces ``SMTP.send`` to watch what goes on the wire) then get anysmtp.  The
swap is process-wide, which is why this runs in a process of its own.

The tests are Django's (:mod:`compat_tests.django.django_mail_tests`), run by
Django's own test runner; the last line printed is a JSON summary (see
:func:`summary`) that ``compat_tests/test_django_backend.py`` checks.  The exit
status is 0 when every test passed.
"""

from __future__ import annotations

import json
import sys
import unittest
from typing import Any, Final

#: The Django release the tests were copied from.
DJANGO_VERSION: Final = "5.2.19"
#: The module holding Django's tests, and its classes that use the SMTP backend
#: (every test in tests/mail/tests.py that opens an SMTP connection).
TEST_MODULE: Final = "compat_tests.django.django_mail_tests"
SMTP_TEST_CLASSES: Final = ("SMTPBackendTests", "SMTPBackendStoppedServerTests")


def summary(result: unittest.TestResult) -> dict[str, Any]:
    """What the run did, and which ``smtplib`` the backend used.

    :param result: the finished run's result.
    :returns: ``smtplib`` (the module Django's backend module calls ``smtplib``),
        ``connection_class`` (what ``EmailBackend().connection_class`` gives),
        ``django`` (the installed version), ``run`` (how many tests ran), and the
        ids of the tests that failed, erred, were skipped or succeeded unexpectedly.
    """
    import django
    from django.core.mail.backends import smtp

    smtp_class = smtp.EmailBackend().connection_class
    return {
        "smtplib": smtp.smtplib.__name__,
        "connection_class": f"{smtp_class.__module__}.{smtp_class.__name__}",
        "django": django.get_version(),
        "run": result.testsRun,
        "failures": [test.id() for test, _trace in result.failures],
        "errors": [test.id() for test, _trace in result.errors],
        "skipped": [test.id() for test, _reason in result.skipped],
        "unexpected_successes": [test.id() for test in result.unexpectedSuccesses],
    }


def main(argv: list[str]) -> int:
    """Run the SMTP test classes with Django's test runner.

    :param argv: the command line's arguments: ``["smtplib"]`` or ``["anysmtp"]``.
    :returns: the exit status: 0 when every test passed, 2 for bad arguments.
    """
    if argv not in (["smtplib"], ["anysmtp"]):
        print(
            "usage: python -m compat_tests.django.run_mail_tests {smtplib,anysmtp}",
            file=sys.stderr,
        )
        return 2
    if argv == ["anysmtp"]:
        # Before anything imports Django's backend or its tests (anysmtp itself
        # has imported the standard library's smtplib by then: its exceptions
        # are smtplib's own classes).
        import anysmtp

        sys.modules["smtplib"] = anysmtp

    import django
    from django.conf import settings
    from django.test.runner import DiscoverRunner

    # Django's defaults are all these tests need: they start their own aiosmtpd
    # server and override EMAIL_BACKEND, EMAIL_HOST and EMAIL_PORT themselves.
    settings.configure()
    django.setup()
    runner = DiscoverRunner(verbosity=1, interactive=False)
    runner.setup_test_environment()
    try:
        suite = runner.build_suite(
            [f"{TEST_MODULE}.{name}" for name in SMTP_TEST_CLASSES]
        )
        result = runner.run_suite(suite)
    finally:
        runner.teardown_test_environment()
    sys.stderr.flush()
    print(json.dumps(summary(result)), flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Django on anysmtp: the email backend recipe and Django's own SMTP tests.

:mod:`compat_tests.django.backend` is the recipe the documentation gives;
:mod:`compat_tests.django.run_mail_tests` runs Django's own SMTP backend tests
(:mod:`compat_tests.django.django_mail_tests`, copied from Django) with
``smtplib`` swapped for anysmtp.
"""

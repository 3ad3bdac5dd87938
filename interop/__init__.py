"""Real mail servers for the interop tests: private Postfix, Exim and Dovecot
(LMTP and submission) on loopback.

``interop/install.sh`` installs them (root only); :mod:`interop.servers` builds
their configurations in a temporary directory, starts and stops them;
:mod:`interop.proxy` records what goes over the wire.
"""

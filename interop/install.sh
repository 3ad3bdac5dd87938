#!/bin/sh
# Install what `make interop` needs: Postfix, Cyrus SASL and Dovecot's LMTP and
# submission servers (Debian packages), and a private copy of Exim unpacked
# under interop/.cache (never installed as a package: exim4-daemon-light and
# postfix conflict).
#
# Exit status: 0 when everything is there (installed now or before), 77 when
# this machine cannot install it (not root, or no apt-get: `make interop` is
# then skipped), anything else when an installation failed.
#
# The system's mail setup is left alone: nothing under /etc/postfix,
# /etc/exim4 or /etc/dovecot is written by this script (they hold only what
# the packages install; Postfix goes in with debconf's "No configuration"),
# and no service is started or enabled.  When this script installs Postfix or
# Dovecot, their units are masked before the packages go in, their init
# scripts are refused by policy-rc.d while they go in, and the rc links the
# postinst made are turned into "stop" links after: the packages neither start
# nor enable the system's Postfix or Dovecot, now or at boot.  A Postfix or
# Dovecot that was there before is not touched (it may be the machine's own
# mail server).  The servers the tests use run from private configurations
# (see interop/servers.py).
set -u

here=$(cd "$(dirname "$0")" && pwd)
cache=${ANYSMTP_INTEROP_CACHE:-$here/.cache}
exim_root=$cache/exim
sasl_plugins=/usr/lib/$(uname -m)-linux-gnu/sasl2
log=$(mktemp)
# A policy-rc.d this script put in place for an install (removed on exit).
own_policy=""
trap 'rm -f "$log" $own_policy' EXIT
say() { echo "interop: $*"; }

# apt's and dpkg's chatter goes to a log, shown only when a step fails.
quietly() {
    "$@" >"$log" 2>&1 && return 0
    tail -n 40 "$log" >&2
    return 1
}

skip() {
    say "skipped: $1." >&2
    say "the interop tests need root and apt-get (Debian or Ubuntu) to install" >&2
    say "postfix, sasl2-bin, libsasl2-modules, dovecot-core, dovecot-lmtpd," >&2
    say "dovecot-submissiond and a private exim4-daemon-light." >&2
    exit 77
}

fail() {
    say "installation failed: $1" >&2
    exit 1
}

if [ "$(id -u)" != "0" ]; then
    skip "this is not root, so Postfix, Exim and Dovecot cannot be installed or started"
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    skip "there is no apt-get/dpkg-deb to install Postfix, Exim and Dovecot with"
fi

export DEBIAN_FRONTEND=noninteractive
updated=no
apt_update() {
    # Only when something is missing: a fresh machine may have no package lists.
    if [ "$updated" = no ]; then
        say "apt-get update"
        quietly apt-get update || fail "apt-get update"
        updated=yes
    fi
}

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# -- Keeping the system's services off ---------------------------------------
# mask_units UNIT...: what `systemctl mask` does (it needs no running systemd
# this way), so that the postinst's "enable" and "start" come to nothing, now
# and at boot.  Only where a unit is neither masked nor overridden already;
# the masks stay.  (deb-systemd-helper's "unmask" in the postinsts removes only
# masks it made itself.)
mask_units() {
    for unit in "$@"; do
        if ! [ -e "/etc/systemd/system/$unit" ] && ! [ -L "/etc/systemd/system/$unit" ]; then
            mkdir -p /etc/systemd/system \
                && ln -s /dev/null "/etc/systemd/system/$unit" \
                || fail "could not mask $unit"
        fi
    done
}

# install_without_services PACKAGE...: apt-get install, with every init script
# the maintainer scripts (and their triggers) invoke refused: invoke-rc.d asks
# policy-rc.d first, and 101 is "not allowed".  The policy is in place only
# while installing, and only where the machine has none of its own.
install_without_services() {
    apt_update
    if ! [ -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# anysmtp interop/install.sh: no service starts.\nexit 101\n' \
            >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
            || fail "could not write /usr/sbin/policy-rc.d"
        own_policy=/usr/sbin/policy-rc.d
    fi
    say "apt-get install $*"
    quietly apt-get install -y --no-install-recommends "$@" \
        || fail "apt-get install $*"
    if [ -n "$own_policy" ]; then
        rm -f "$own_policy"
        own_policy=""
    fi
}

# disable_init_script NAME: the postinst's update-rc.d linked the init script
# into the runlevels; where no systemd runs, those links would start it at
# boot, so they become "stop" links.  (Under systemd the masked unit of the
# same name wins over the init script.)
disable_init_script() {
    if [ -x "/etc/init.d/$1" ] && ! [ -d /run/systemd/system ]; then
        quietly update-rc.d "$1" disable || fail "update-rc.d $1 disable"
    fi
}

# -- Postfix and Cyrus SASL -------------------------------------------------
missing=""
for package in postfix sasl2-bin libsasl2-modules libsasl2-modules-db; do
    installed "$package" || missing="$missing $package"
done
if [ -z "$missing" ]; then
    for plugin in libplain.so liblogin.so libcrammd5.so libsasldb.so; do
        # Installed but damaged: reinstalling is the cure.
        [ -e "$sasl_plugins/$plugin" ] \
            || missing=" --reinstall libsasl2-modules libsasl2-modules-db"
    done
fi
if [ -n "$missing" ]; then
    apt_update
    # "No configuration": the package must not set up a system MTA.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | debconf-set-selections || fail "debconf-set-selections"
    # Only a Postfix this script installs is kept off: one that was there may
    # be the machine's own.  postfix@.service runs the instances (postfix.service
    # only pulls them in).
    fresh_postfix=no
    if ! installed postfix; then
        fresh_postfix=yes
        mask_units postfix.service postfix@.service
    fi
    # shellcheck disable=SC2086
    install_without_services $missing
    if [ "$fresh_postfix" = yes ]; then
        disable_init_script postfix
    fi
fi
for program in /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/saslpasswd2; do
    [ -x "$program" ] || fail "$program is missing after installing the packages"
done
for plugin in libplain.so liblogin.so libcrammd5.so libsasldb.so; do
    [ -e "$sasl_plugins/$plugin" ] || fail "no Cyrus SASL plugin $sasl_plugins/$plugin"
done
getent passwd postfix >/dev/null || fail "the postfix package made no postfix user"
getent group postdrop >/dev/null || fail "the postfix package made no postdrop group"

# -- Dovecot's LMTP and submission servers -----------------------------------
missing=""
for package in dovecot-core dovecot-lmtpd dovecot-submissiond; do
    installed "$package" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    # As for Postfix: only a Dovecot this script installs is kept off (the
    # submission and LMTP packages add to dovecot-core's service, and their
    # triggers' restarts are refused by the policy while they go in).
    fresh_dovecot=no
    if ! installed dovecot-core; then
        fresh_dovecot=yes
        mask_units dovecot.service dovecot.socket
    fi
    # shellcheck disable=SC2086
    install_without_services $missing
    if [ "$fresh_dovecot" = yes ]; then
        disable_init_script dovecot
    fi
fi
for program in /usr/sbin/dovecot /usr/bin/doveconf /usr/lib/dovecot/lmtp \
    /usr/lib/dovecot/submission /usr/lib/dovecot/submission-login; do
    [ -x "$program" ] || fail "$program is missing after installing the packages"
done
getent passwd dovecot >/dev/null || fail "the dovecot-core package made no dovecot user"
getent passwd dovenull >/dev/null || fail "the dovecot-core package made no dovenull user"

# -- Exim, unpacked privately -------------------------------------------------
exim_ok() {
    [ -x "$exim_root/usr/sbin/exim4" ] \
        && ! ldd "$exim_root/usr/sbin/exim4" 2>/dev/null | grep -q "not found"
}

if ! [ -x "$exim_root/usr/sbin/exim4" ]; then
    apt_update
    downloads=$cache/debs
    rm -rf "$downloads" "$exim_root.new"
    mkdir -p "$downloads" || fail "mkdir $downloads"
    # apt downloads as the _apt user when it can write the directory.
    if getent passwd _apt >/dev/null; then
        chown _apt "$downloads" 2>/dev/null || true
    fi
    say "apt-get download exim4-daemon-light"
    (cd "$downloads" && quietly apt-get download exim4-daemon-light) \
        || fail "apt-get download exim4-daemon-light"
    deb=$(ls "$downloads"/exim4-daemon-light_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || fail "apt-get download left no exim4-daemon-light .deb"
    dpkg-deb -x "$deb" "$exim_root.new" || fail "dpkg-deb -x $deb"
    dpkg-deb -f "$deb" Version >"$exim_root.new/VERSION"
    # The libraries Exim links with (its Depends that are libraries; the rest,
    # exim4-base and exim4-config, is the system setup that is not wanted).
    libraries=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' \
        | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/ //g' | grep '^lib')
    needed=""
    for package in $libraries; do
        installed "$package" || needed="$needed $package"
    done
    if [ -n "$needed" ]; then
        say "apt-get install$needed (libraries for Exim)"
        # shellcheck disable=SC2086
        quietly apt-get install -y --no-install-recommends $needed \
            || fail "apt-get install$needed"
    fi
    rm -rf "$exim_root" && mv "$exim_root.new" "$exim_root" \
        || fail "could not move Exim into $exim_root"
    rm -rf "$downloads"
fi
exim_ok || {
    ldd "$exim_root/usr/sbin/exim4" | grep "not found" >&2
    fail "Exim in $exim_root misses shared libraries (rm -rf $exim_root to retry)"
}

# Exim looks its compiled-in user up at start and refuses to run without it:
# the account exim4-base would have made (no home, no login shell).
if ! getent group Debian-exim >/dev/null; then
    groupadd --system Debian-exim || fail "groupadd Debian-exim"
fi
if ! getent passwd Debian-exim >/dev/null; then
    useradd --system --gid Debian-exim --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin Debian-exim || fail "useradd Debian-exim"
fi

say "ready: Postfix $(postconf -dh mail_version)," \
    "Exim $(cat "$exim_root/VERSION") (in $exim_root)," \
    "Dovecot $(dovecot --version | cut -d' ' -f1)," \
    "Cyrus SASL $(dpkg-query -W -f='${Version}' libsasl2-modules)"

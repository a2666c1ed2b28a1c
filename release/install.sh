#!/bin/sh
# Installs etong @VERSION@ (commit @COMMIT@) from this unpacked tarball, on a host that is not
# Debian or has no dpkg: the same tree as the .deb (docs/OPERATIONS.md, "Installing on a
# closed network"). Fetches nothing. Run as root from the unpacked folder:
#
#     ./install.sh              install, or upgrade an earlier install.sh install in place
#     ./install.sh --uninstall  remove the program; keep /etc/etong and /var/lib/etong
#
# ETONG_PYTHON names a Python 3.11 other than /usr/bin/python3.11 (the venv's interpreter).
# Config files in /etc/etong are written only when absent; an edited one is kept and the
# shipped version is put beside it as FILE.new. The store and its keys are never touched.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
tree="$here/root"
python="${ETONG_PYTHON:-/usr/bin/python3.11}"

@STORE_CHECK@

die() { echo "install.sh: $*" >&2; exit 1; }
has_systemd() { [ -d /run/systemd/system ]; }

stop_service() {  # prints "yes" when the service was running and is now stopped
    if has_systemd && systemctl is-active --quiet etong.service; then
        systemctl stop etong.service >&2
        echo yes
    fi
}

install_program() {
    rm -rf /opt/etong.new /opt/etong.old
    cp -a "$tree/opt/etong" /opt/etong.new
    if [ "$python" != /usr/bin/python3.11 ]; then  # the venv's interpreter and its record
        ln -sfn "$python" /opt/etong.new/bin/python3.11
        sed -i "s|^home = .*|home = $(dirname "$python")|; s|^executable = .*|executable = $python|" \
            /opt/etong.new/pyvenv.cfg
    fi
    if [ -e /opt/etong ]; then mv /opt/etong /opt/etong.old; fi
    mv /opt/etong.new /opt/etong
    rm -rf /opt/etong.old
    ln -sfn /opt/etong/bin/etong /usr/bin/etong
    mkdir -p /usr/lib/systemd/system /usr/share/doc/etong
    cp "$tree"/usr/lib/systemd/system/* /usr/lib/systemd/system/
    cp -R "$tree"/usr/share/doc/etong/. /usr/share/doc/etong/
}

install_config() {  # like dpkg's conffiles: an edited file is kept, the new one goes beside
    if ! getent passwd etong >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/etong --no-create-home \
            --shell /usr/sbin/nologin --comment "etong bridge" etong
    fi
    install -d -m 0750 -o root -g etong /etc/etong
    for shipped in "$tree"/etc/etong/*; do
        name="$(basename "$shipped")" target="/etc/etong/$(basename "$shipped")"
        mode=0640
        [ "$name" = mosquitto.conf ] && mode=0644
        if [ ! -e "$target" ]; then
            install -m "$mode" -o root -g etong "$shipped" "$target"
        elif ! cmp -s "$shipped" "$target"; then
            install -m "$mode" -o root -g etong "$shipped" "$target.new"
            echo "install.sh: kept your $target; the shipped one is $target.new"
        fi
    done
    if [ ! -d /var/lib/etong ]; then
        install -d -m 0700 -o etong -g etong /var/lib/etong
    fi
    chmod 0700 /var/lib/etong
}

uninstall() {
    stop_service >/dev/null
    rm -rf /opt/etong /usr/share/doc/etong /usr/bin/etong
    rm -f /usr/lib/systemd/system/etong.service /usr/lib/systemd/system/etong-acl.path \
        /usr/lib/systemd/system/etong-acl.service
    if has_systemd; then systemctl daemon-reload; fi
    echo "install.sh: removed etong; kept /etc/etong (config) and /var/lib/etong (the store" \
        "and its keys), and the etong user"
}

[ "$(id -u)" = 0 ] || die "run as root"
if [ "${1:-}" = --uninstall ]; then uninstall; exit 0; fi
[ $# = 0 ] || die "usage: install.sh [--uninstall]"
[ "$(uname -m)" = x86_64 ] || die "this build is for x86_64, not $(uname -m)"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
    || die "$python is not Python 3.11 (set ETONG_PYTHON to one)"
etong_refuse_newer_store @SQLITE_SCHEMA@ || exit 1

was_running="$(stop_service)"
install_program
install_config
if has_systemd; then
    systemctl daemon-reload
    if [ "$was_running" = yes ]; then systemctl start etong.service; fi
fi
echo "install.sh: installed $(/usr/bin/etong --version)"

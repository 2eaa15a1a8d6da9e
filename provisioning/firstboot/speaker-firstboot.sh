#!/bin/bash
# speaker-firstboot.sh: turn a fresh Raspberry Pi OS card into speaker node NODE_ID, once.
#
# Run by the OS's own first-boot hook (Bookworm: firstrun.sh via systemd.run=; Trixie: cloud-init
# runcmd) and, if that boot was cut short, again at every boot by speaker-firstboot.service for as long
# as BOOT/speaker-node/identity.json exists. Every step is idempotent; the last step renames the marker
# to installed.json, so a half-finished first boot (power cut on the pole) simply runs again.
#
#   speaker-firstboot.sh [--root DIR] [--boot DIR]
#
# --root is for tests and image customisation: tools that support it (useradd, systemctl) get it, files
# are written under DIR, and commands that would touch the running system (hostnamectl) are skipped.
# Nothing here needs the network: software comes from the offline wheel bundle on the card.
set -euo pipefail
umask 077

ROOT=/
BOOT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --boot) BOOT="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "speaker-firstboot: unknown argument $1" >&2; exit 2 ;;
    esac
done
ROOT="${ROOT%/}"
if [ -z "$BOOT" ]; then
    BOOT="$ROOT/boot/firmware"
    [ -d "$BOOT/speaker-node" ] || BOOT="$ROOT/boot"   # pre-Bookworm layout
fi
CARD="$BOOT/speaker-node"
ETC="$ROOT/etc/speaker-node"
VENV=/opt/speaker-node/venv
LIBDIR=/usr/local/lib/speaker-node
SECRETS="node.key node.crt ca.crt trust.json node.toml"

log() { echo "speaker-firstboot: $*"; }
die() { echo "speaker-firstboot: ERROR: $*" >&2; exit 1; }
live() { [ -z "$ROOT" ]; }   # ROOT was "/" and became "" above

[ -f "$CARD/identity.json" ] || { log "no $CARD/identity.json: nothing to do"; exit 0; }

setting() { sed -n "s/^$1=//p" "$CARD/firstboot.env" | head -n 1; }
NODE_ID="$(setting NODE_ID)"
ADMIN_USER="$(setting ADMIN_USER)"
TIMEZONE="$(setting TIMEZONE)"
[[ "$NODE_ID" =~ ^[0-9]{5}-[0-9]{2}$ ]] || die "bad NODE_ID '$NODE_ID' in $CARD/firstboot.env"
[[ "$ADMIN_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "bad ADMIN_USER '$ADMIN_USER'"
[[ "$TIMEZONE" =~ ^[A-Za-z_]+/[A-Za-z_+-]+$ ]] || die "bad TIMEZONE '$TIMEZONE'"
log "provisioning node $NODE_ID (root '${ROOT:-/}', card $CARD)"

# 0. retry path first: if this boot is cut short, speaker-firstboot.service finishes the job later.
install -d -m 0755 "$ROOT/etc/systemd/system" "$ROOT$LIBDIR"
install -m 0755 "$CARD/speaker-firstboot.sh" "$ROOT$LIBDIR/speaker-firstboot.sh"
install -m 0644 "$CARD/units/speaker-firstboot.service" "$ROOT/etc/systemd/system/speaker-firstboot.service"
systemctl --root "${ROOT:-/}" enable speaker-firstboot.service

has_line() { [ -f "$2" ] && grep -q "^$1:" "$2"; }
uid_of() { sed -n "s/^$1:[^:]*:\([0-9]*\):.*/\1/p" "$ROOT/etc/passwd"; }
gid_of() { sed -n "s/^$1:[^:]*:\([0-9]*\):.*/\1/p" "$ROOT/etc/group"; }
# chown by number read from the target's own /etc/passwd: names on the machine running this may differ.
own() { local who="$1"; shift; chown "$(uid_of "$who" || true):$(gid_of "$who" || true)" "$@" 2>/dev/null \
        || chown "$who:$who" "$@"; }

# 1. hostname and time zone ----------------------------------------------------------------------
mkdir -p "$ROOT/etc"
echo "$NODE_ID" > "$ROOT/etc/hostname"
chmod 0644 "$ROOT/etc/hostname"
if [ -f "$ROOT/etc/hosts" ] && grep -q '^127\.0\.1\.1' "$ROOT/etc/hosts"; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$NODE_ID/" "$ROOT/etc/hosts"
else
    printf '127.0.1.1\t%s\n' "$NODE_ID" >> "$ROOT/etc/hosts"
fi
chmod 0644 "$ROOT/etc/hosts"
if live; then hostnamectl set-hostname "$NODE_ID" || hostname "$NODE_ID" || true; fi
ln -sfn "/usr/share/zoneinfo/$TIMEZONE" "$ROOT/etc/localtime"
echo "$TIMEZONE" > "$ROOT/etc/timezone"
chmod 0644 "$ROOT/etc/timezone"

# 2. users: the service account and the technician's key-only login ------------------------------
for group in gpio audio dialout; do
    has_line "$group" "$ROOT/etc/group" || groupadd --root "${ROOT:-/}" --system "$group"
done
if ! has_line speaker "$ROOT/etc/passwd"; then
    useradd --root "${ROOT:-/}" --system --user-group --home-dir /var/lib/speaker-node --no-create-home \
        --shell /usr/sbin/nologin --groups gpio,audio,dialout speaker
else
    usermod --root "${ROOT:-/}" --append --groups gpio,audio,dialout speaker
fi
if [ -s "$CARD/authorized_keys" ]; then
    if ! has_line "$ADMIN_USER" "$ROOT/etc/passwd"; then
        # '*' = no password at all (not "locked"): sshd still accepts the key, nothing accepts a password.
        useradd --root "${ROOT:-/}" --create-home --shell /bin/bash --password '*' \
            --groups sudo,adm,gpio,audio,dialout "$ADMIN_USER"
    fi
    home="$ROOT/home/$ADMIN_USER"
    install -d -m 0700 "$home/.ssh"
    install -m 0600 "$CARD/authorized_keys" "$home/.ssh/authorized_keys"
    own "$ADMIN_USER" "$home" "$home/.ssh" "$home/.ssh/authorized_keys"
    install -d -m 0750 "$ROOT/etc/sudoers.d"
    echo "$ADMIN_USER ALL=(ALL) NOPASSWD: ALL" > "$ROOT/etc/sudoers.d/010-speaker-admin"
    chmod 0440 "$ROOT/etc/sudoers.d/010-speaker-admin"
    systemctl --root "${ROOT:-/}" enable ssh.service || log "warning: could not enable ssh.service"
fi
install -d -m 0755 "$ROOT/etc/ssh/sshd_config.d"
cat > "$ROOT/etc/ssh/sshd_config.d/10-speaker-node.conf" <<'SSHD'
# Written by speaker-firstboot: keys only, no root login.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
SSHD
chmod 0644 "$ROOT/etc/ssh/sshd_config.d/10-speaker-node.conf"
# The console "create a user" wizard would otherwise wait on tty1 of a headless pole.
systemctl --root "${ROOT:-/}" disable userconfig.service 2>/dev/null || true

# 3. software from the offline bundle (never PyPI on the pole) -----------------------------------
if [ ! -x "$ROOT$VENV/bin/speaker-node" ]; then
    [ -d "$CARD/bundle" ] || die "no offline bundle in $CARD/bundle and speaker-node is not installed"
    pip_wheel="$(ls "$CARD"/bundle/pip-*.whl 2>/dev/null | head -n 1 || true)"
    mkdir -p "$ROOT/opt/speaker-node"
    # system site packages: gpiozero's pin backend (python3-lgpio) comes from Raspberry Pi OS.
    if [ -n "$pip_wheel" ]; then
        python3 -m venv --system-site-packages --without-pip "$ROOT$VENV"
        "$ROOT$VENV/bin/python" "$pip_wheel/pip" install --no-index --find-links "$CARD/bundle" \
            --no-cache-dir speaker-node
    else
        python3 -m venv --system-site-packages "$ROOT$VENV"
        "$ROOT$VENV/bin/python" -m pip install --no-index --find-links "$CARD/bundle" \
            --no-cache-dir speaker-node
    fi
fi

# 4. secrets: off the FAT partition (world-readable, no owners) into /etc/speaker-node -----------
install -d -m 0750 "$ETC"
chown "0:$(gid_of speaker || echo speaker)" "$ETC" 2>/dev/null || chown root:speaker "$ETC"
for name in $SECRETS; do
    if [ -f "$CARD/$name" ]; then
        tmp="$(mktemp "$ETC/.$name.XXXXXX")"
        cat "$CARD/$name" > "$tmp"
        chmod 0600 "$tmp"
        own speaker "$tmp"
        sync "$tmp" 2>/dev/null || sync
        mv -f "$tmp" "$ETC/$name"
    fi
    [ -f "$ETC/$name" ] || die "$name is neither on the card nor in $ETC"
done
sync
for name in $SECRETS; do
    # overwrite in place (same clusters), then delete: the card may be lost or reused.
    if [ -f "$CARD/$name" ]; then shred --iterations=1 --zero --remove "$CARD/$name"; fi
done

# 5. systemd units and drop-ins ---------------------------------------------------------------
install -d -m 0755 "$ROOT/etc/systemd/journald.conf.d" "$ROOT/etc/systemd/system.conf.d"
install -m 0644 "$CARD/units/speaker-node.service" "$ROOT/etc/systemd/system/speaker-node.service"
install -m 0644 "$CARD/units/journald-speaker.conf" "$ROOT/etc/systemd/journald.conf.d/speaker-node.conf"
install -m 0644 "$CARD/units/watchdog.conf" "$ROOT/etc/systemd/system.conf.d/speaker-watchdog.conf"
for unit in speaker-reboot.path speaker-reboot.service; do
    if [ -f "$CARD/units/$unit" ]; then install -m 0644 "$CARD/units/$unit" "$ROOT/etc/systemd/system/$unit"; fi
done
if [ -f "$CARD/units/99-speaker-modem.rules" ]; then
    install -D -m 0644 "$CARD/units/99-speaker-modem.rules" "$ROOT/etc/udev/rules.d/99-speaker-modem.rules"
fi
systemctl --root "${ROOT:-/}" enable speaker-node.service
if [ -f "$ROOT/etc/systemd/system/speaker-reboot.path" ]; then
    systemctl --root "${ROOT:-/}" enable speaker-reboot.path
fi

# 6. remove our hook and mark the card done -----------------------------------------------------
if [ -f "$BOOT/cmdline.txt" ] && grep -q 'systemd.run=' "$BOOT/cmdline.txt"; then
    sed -i -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
        -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
fi
rm -f "$BOOT/firstrun.sh"
mv -f "$CARD/identity.json" "$CARD/installed.json"
sync
log "node $NODE_ID provisioned"

#!/bin/bash
# speaker-firstboot.sh: turn a fresh Raspberry Pi OS card into speaker node NODE_ID, once.
#
# Run by the OS's own first-boot hook (Bookworm: firstrun.sh via systemd.run=; Trixie: cloud-init
# runcmd) and, if that boot was cut short or a step failed, again at every boot by
# speaker-firstboot.service for as long as BOOT/speaker-node/identity.json exists. Every step is
# idempotent; the last step renames the marker to installed.json.
#
#   speaker-firstboot.sh [--root DIR] [--boot DIR] [--start]
#
# --start  start speaker-node.service at the end (cloud-init and the retry unit run inside a boot that
#          has already decided what to start; the Bookworm hook reboots instead).
# --root is for tests and image customisation: tools that support it (useradd, systemctl) get it, files
# are written under DIR, and commands that would touch the running system (hostnamectl) are skipped.
# Nothing here needs the network: wheels and Debian packages come from the offline bundle on the card.
#
# The secrets rule: the node's key leaves the FAT partition first, before any step that can fail.
# A failure leaves FIRSTBOOT-FAILED.txt on the FAT partition (readable on any laptop), this log
# (speaker-node/firstboot.log), and blinks the activity LED fast.
set -euo pipefail
# System files (venv, units, links) must be readable by the service user and the technician; the
# secrets get their own explicit modes below. (umask 077 here made the venv unreachable: 203/EXEC.)
umask 022

ROOT=/
BOOT=""
START=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --boot) BOOT="$2"; shift 2 ;;
        --start) START=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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
# The release tree (docs/protocol.md 8a): releases/VERSION/venv, and the links `current` (what systemd
# starts) and `committed` (the last version that passed its health check). VENV is set in step 5.
TREE=/opt/speaker-node
LIBDIR=/usr/local/lib/speaker-node
BINDIR=/usr/local/bin
CLIS="speaker-node"
SECRETS="node.key node.crt ca.crt trust.json node.toml"
FAILED_NOTE="$BOOT/FIRSTBOOT-FAILED.txt"
STEP="start"

log() { echo "speaker-firstboot: $(date -u +%H:%M:%S) $*"; }
die() { echo "speaker-firstboot: ERROR: $*" >&2; exit 1; }
live() { [ -z "$ROOT" ]; }   # ROOT was "/" and became "" above
step() { STEP="$1"; log "step: $1"; }

# A failed first boot shows itself: a note on the FAT partition and a fast-blinking activity LED.
blink_failure() {
    local led
    for led in "$ROOT"/sys/class/leds/ACT "$ROOT"/sys/class/leds/led0; do
        [ -e "$led/trigger" ] || continue
        echo timer > "$led/trigger" 2>/dev/null || continue
        echo 100 > "$led/delay_on" 2>/dev/null || true
        echo 100 > "$led/delay_off" 2>/dev/null || true
        return 0
    done
}
on_exit() {
    local status=$?
    [ "$status" -eq 0 ] && return 0
    {
        echo "speaker-node first boot FAILED (khởi động lần đầu THẤT BẠI)"
        echo "node: ${NODE_ID:-?}  step: $STEP  exit status: $status  time (UTC): $(date -u '+%F %T')"
        echo "Details: speaker-node/firstboot.log on this partition. It is retried at every boot."
        echo "Chi tiết: speaker-node/firstboot.log trên phân vùng này. Sẽ thử lại mỗi lần khởi động."
    } > "$FAILED_NOTE" 2>/dev/null || true
    blink_failure || true
    echo "speaker-firstboot: FAILED at step '$STEP' (status $status)" >&2
    sync || true
}
trap on_exit EXIT

[ -f "$CARD/identity.json" ] || { log "no $CARD/identity.json: nothing to do"; exit 0; }

# 0. secrets first: off the FAT partition (world-readable, no owners) into /etc/speaker-node as root
#    0600 in a root 0700 folder. Nothing before this can fail except the copy itself; the owner and
#    group for the service user are set once that user exists (step 3).
step "secrets off the FAT partition"
mkdir -p "$ETC"
chmod 0700 "$ETC"
for name in $SECRETS; do
    if [ -f "$CARD/$name" ]; then
        tmp="$(mktemp "$ETC/.$name.XXXXXX")"
        chmod 0600 "$tmp"
        cat "$CARD/$name" > "$tmp"
        sync "$tmp" 2>/dev/null || sync
        mv -f "$tmp" "$ETC/$name"
    fi
done
sync
for name in $SECRETS; do
    # overwrite in place (same clusters), then delete: the card may be lost or reused.
    if [ -f "$CARD/$name" ] && [ -f "$ETC/$name" ]; then
        shred --iterations=1 --zero --remove "$CARD/$name" 2>/dev/null || rm -f "$CARD/$name"
    fi
done
sync
for name in $SECRETS; do
    [ -f "$ETC/$name" ] || die "$name is neither on the card nor in $ETC"
done

step "settings"
setting() { sed -n "s/^$1=//p" "$CARD/firstboot.env" | head -n 1; }
NODE_ID="$(setting NODE_ID)"
ADMIN_USER="$(setting ADMIN_USER)"
TIMEZONE="$(setting TIMEZONE)"
[[ "$NODE_ID" =~ ^[0-9]{5}-[0-9]{2}$ ]] || die "bad NODE_ID '$NODE_ID' in $CARD/firstboot.env"
[[ "$ADMIN_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "bad ADMIN_USER '$ADMIN_USER'"
[[ "$TIMEZONE" =~ ^[A-Za-z_]+/[A-Za-z_+-]+$ ]] || die "bad TIMEZONE '$TIMEZONE'"
log "provisioning node $NODE_ID (root '${ROOT:-/}', card $CARD)"

# 1. retry path: if this boot is cut short or a step fails, speaker-firstboot.service runs this again.
step "retry unit"
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

# 2. hostname and time zone ----------------------------------------------------------------------
step "hostname and time zone"
echo "$NODE_ID" > "$ROOT/etc/hostname"
chmod 0644 "$ROOT/etc/hostname"
if [ -f "$ROOT/etc/hosts" ] && grep -q '^127\.0\.1\.1' "$ROOT/etc/hosts"; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$NODE_ID/" "$ROOT/etc/hosts"
else
    printf '127.0.1.1\t%s\n' "$NODE_ID" >> "$ROOT/etc/hosts"
fi
chmod 0644 "$ROOT/etc/hosts"
# The running system's name too, when there is a hostnamed to ask (not in a chroot, whose UTS name is the
# host's; not in the firstrun boot, which reboots into /etc/hostname anyway).
if live && ! systemd-detect-virt --quiet --chroot 2>/dev/null; then
    hostnamectl set-hostname "$NODE_ID" 2>/dev/null || log "hostname takes effect at the next boot"
fi
ln -sfn "/usr/share/zoneinfo/$TIMEZONE" "$ROOT/etc/localtime"
echo "$TIMEZONE" > "$ROOT/etc/timezone"
chmod 0644 "$ROOT/etc/timezone"

# 3. users: the service account and the technician's key-only login ------------------------------
step "users"
for group in gpio audio dialout; do
    has_line "$group" "$ROOT/etc/group" || groupadd --root "${ROOT:-/}" --system "$group"
done
if ! has_line speaker "$ROOT/etc/passwd"; then
    useradd --root "${ROOT:-/}" --system --user-group --home-dir /var/lib/speaker-node --no-create-home \
        --shell /usr/sbin/nologin --groups gpio,audio,dialout speaker
else
    usermod --root "${ROOT:-/}" --append --groups gpio,audio,dialout speaker
fi
# The service reads its secrets as User=speaker: folder root:speaker 0750, files speaker 0600.
for name in $SECRETS; do own speaker "$ETC/$name"; chmod 0600 "$ETC/$name"; done
chown "0:$(gid_of speaker || echo speaker)" "$ETC" 2>/dev/null || chown root:speaker "$ETC"
chmod 0750 "$ETC"
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

# 4. libVLC from the Debian packages on the card (Raspberry Pi OS Lite has none) ------------------
# bundle/debs is a flat apt repository (Packages made on the laptop) and the only source apt sees here:
# apt installs what REQUESTED needs and the image lacks, in order, checking dependencies; nothing is
# downloaded from the network and nothing on the image is downgraded. (Local .deb paths on apt's
# command line fail for packages with an epoch: "Pathname to install is not absolute".)
step "Debian packages (libVLC) from the card"
DEBS="$CARD/bundle/debs"
if [ -f "$DEBS/Packages" ] && [ -f "$DEBS/REQUESTED" ]; then
    read -r -a requested < "$DEBS/REQUESTED"
    status="$(dpkg-query --root="${ROOT:-/}" -W -f='${db:Status-Abbrev}\n' "${requested[@]}" 2>/dev/null || true)"
    if [ "$(grep -c '^ii' <<< "$status")" -eq "${#requested[@]}" ]; then
        log "Debian packages ${requested[*]} are already installed"
    else
        # apt's own state for this one repository, away from the image's (its lists dir is cleaned by
        # apt itself: nothing else may live in it)
        local_apt="/var/cache/speaker-node/apt"
        rm -rf "$ROOT$local_apt"
        install -d -m 0755 "$ROOT$local_apt/lists/partial" "$ROOT$local_apt/parts" "$ROOT$local_apt/cache/archives/partial"
        echo "deb [trusted=yes] file:${DEBS#"$ROOT"} ./" > "$ROOT$local_apt/sources.list"
        apt_local=(-o "Dir::Etc::SourceList=$local_apt/sources.list" -o "Dir::Etc::SourceParts=$local_apt/parts"
                   -o "Dir::State::Lists=$local_apt/lists" -o "Dir::Cache=$local_apt/cache"
                   -o APT::Sandbox::User=root -o Acquire::Languages=none)
        apt_update=(apt-get "${apt_local[@]}" -q update)
        apt_install=(apt-get "${apt_local[@]}" install -y -q --no-install-recommends
                     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${requested[@]}")
        log "installing ${requested[*]} and what they need from $DEBS"
        if live; then
            "${apt_update[@]}"
            DEBIAN_FRONTEND=noninteractive "${apt_install[@]}"
        else
            # an image being customised: apt and the maintainer scripts run inside it
            chroot "$ROOT" "${apt_update[@]}"
            DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "${apt_install[@]}"
        fi
        rm -rf "$ROOT$local_apt"
    fi
fi

# 5. software from the offline wheel bundle (never PyPI on the pole) -----------------------------
step "wheels from the card"
wheel="$(ls "$CARD"/bundle/speaker_node-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$wheel" ]; then
    VERSION="$(basename "$wheel" | cut -d- -f2)"
elif [ -L "$ROOT$TREE/current" ]; then
    VERSION="$(basename "$(readlink "$ROOT$TREE/current")")"   # a retry after the bundle was used
else
    die "no speaker_node wheel in $CARD/bundle and speaker-node is not installed"
fi
VENV="$TREE/releases/$VERSION/venv"
if [ ! -f "$ROOT$TREE/releases/$VERSION/.complete" ]; then
    [ -d "$CARD/bundle" ] || die "no offline bundle in $CARD/bundle and speaker-node is not installed"
    pip_wheel="$(ls "$CARD"/bundle/pip-*.whl 2>/dev/null | head -n 1 || true)"
    rm -rf "$ROOT$TREE/releases/$VERSION"   # a venv half-made by a cut-short boot
    install -d -m 0755 "$ROOT$TREE" "$ROOT$TREE/releases"
    # system site packages: gpiozero's pin backend (python3-lgpio) comes from Raspberry Pi OS.
    if [ -n "$pip_wheel" ]; then
        python3 -m venv --system-site-packages --without-pip "$ROOT$VENV"
        "$ROOT$VENV/bin/python" "$pip_wheel/pip" install --no-index --find-links "$CARD/bundle" \
            --no-cache-dir --disable-pip-version-check --no-warn-script-location speaker-node
    else
        python3 -m venv --system-site-packages "$ROOT$VENV"
        "$ROOT$VENV/bin/python" -m pip install --no-index --find-links "$CARD/bundle" \
            --no-cache-dir --disable-pip-version-check speaker-node
    fi
    echo "$VERSION" > "$ROOT$TREE/releases/$VERSION/.complete"   # written last: the install is whole
fi
# Both links name the first version; renamed over (atomic), as the updater does.
for link in current committed; do
    ln -sfn "releases/$VERSION" "$ROOT$TREE/.$link.new" && mv -Tf "$ROOT$TREE/.$link.new" "$ROOT$TREE/$link"
done
# The bundle's wheels seed the update staging area: a later update downloads only what changed.
install -d -m 0700 "$ROOT/var/lib/speaker-node" "$ROOT/var/lib/speaker-node/update-staging"
if [ -d "$CARD/bundle" ] && [ ! -d "$ROOT/var/lib/speaker-node/update-staging/$VERSION" ]; then
    install -d -m 0700 "$ROOT/var/lib/speaker-node/update-staging/$VERSION"
    cp "$CARD"/bundle/*.whl "$ROOT/var/lib/speaker-node/update-staging/$VERSION/"
fi
if getent passwd speaker >/dev/null 2>&1 && [ -z "$ROOT" ]; then
    chown -R speaker:speaker /var/lib/speaker-node
fi
# Readable and traversable by everyone (a venv from an older first boot may have been made 077).
chmod -R u+rwX,go+rX,go-w "$ROOT$TREE"
# The technician's commands on PATH, with and without sudo (secure_path has /usr/local/bin).
install -d -m 0755 "$ROOT$BINDIR"
# Through `current`, so the commands follow a software update.
for cli in $CLIS; do ln -sfn "$TREE/current/venv/bin/$cli" "$ROOT$BINDIR/$cli"; done

# 6. systemd units and drop-ins ---------------------------------------------------------------
step "units"
install -d -m 0755 "$ROOT/etc/systemd/journald.conf.d" "$ROOT/etc/systemd/system.conf.d"
install -m 0644 "$CARD/units/speaker-node.service" "$ROOT/etc/systemd/system/speaker-node.service"
install -m 0644 "$CARD/units/journald-speaker.conf" "$ROOT/etc/systemd/journald.conf.d/speaker-node.conf"
install -m 0644 "$CARD/units/watchdog.conf" "$ROOT/etc/systemd/system.conf.d/speaker-watchdog.conf"
for unit in speaker-reboot.path speaker-reboot.service speaker-update.path speaker-update.service; do
    if [ -f "$CARD/units/$unit" ]; then install -m 0644 "$CARD/units/$unit" "$ROOT/etc/systemd/system/$unit"; fi
done
if [ -f "$CARD/units/99-speaker-modem.rules" ]; then
    install -D -m 0644 "$CARD/units/99-speaker-modem.rules" "$ROOT/etc/udev/rules.d/99-speaker-modem.rules"
fi
systemctl --root "${ROOT:-/}" enable speaker-node.service
for path_unit in speaker-reboot.path speaker-update.path; do
    if [ -f "$ROOT/etc/systemd/system/$path_unit" ]; then
        systemctl --root "${ROOT:-/}" enable "$path_unit"
    fi
done

# 7. prove the service user can run what the unit runs (the 203/EXEC class of failure) ------------
step "service user check"
if live; then
    runuser -u speaker -- "$TREE/current/venv/bin/speaker-node" --version \
        || die "user speaker cannot run $TREE/current/venv/bin/speaker-node (modes under $TREE?)"
    runuser -u speaker -- test -r /etc/speaker-node/node.key || die "user speaker cannot read its key"
fi

# 8. remove our hook and mark the card done -----------------------------------------------------
step "finish"
if [ -f "$BOOT/cmdline.txt" ] && grep -q 'systemd.run=' "$BOOT/cmdline.txt"; then
    sed -i -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
        -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
fi
rm -f "$BOOT/firstrun.sh" "$FAILED_NOTE"
mv -f "$CARD/identity.json" "$CARD/installed.json"
sync
if live && [ "$START" = 1 ]; then
    # --no-block: the retry unit is ordered Before=speaker-node.service.
    systemctl start --no-block speaker-node.service || log "warning: could not start speaker-node.service"
fi
log "node $NODE_ID provisioned"

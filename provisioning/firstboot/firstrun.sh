#!/bin/bash
# speaker-node: Raspberry Pi OS Bookworm first-boot hook (the Raspberry Pi Imager convention):
# cmdline.txt has "systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot
#  systemd.unit=kernel-command-line.target"; this runs once, then the system reboots.
# If the card already had an Imager firstrun.sh (Wi-Fi, user, locale), `speaker-provision sdcard` kept
# it as speaker-node/imager-firstrun.sh: it runs first, then ours, so the technician's settings stay.
# The work is in speaker-node/speaker-firstboot.sh; its log stays on the card for the technician.
set +e
BOOT="${SPEAKER_BOOT:-/boot/firmware}"   # SPEAKER_BOOT: tests only
[ -d "$BOOT/speaker-node" ] || BOOT=/boot
LOG="$BOOT/speaker-node/firstboot.log"
if [ -f "$BOOT/speaker-node/imager-firstrun.sh" ]; then
    echo "running the Imager customisation (imager-firstrun.sh)" >>"$LOG"
    bash "$BOOT/speaker-node/imager-firstrun.sh" >>"$LOG" 2>&1
    echo "imager-firstrun.sh finished with status $?" >>"$LOG"
    mv -f "$BOOT/speaker-node/imager-firstrun.sh" "$BOOT/speaker-node/imager-firstrun.done"
fi
bash "$BOOT/speaker-node/speaker-firstboot.sh" --boot "$BOOT" >>"$LOG" 2>&1
status=$?
# Whatever happened, never boot into this hook again: a failure is retried by speaker-firstboot.service
# (installed early by the script; the secrets left the FAT partition before anything else) and shows
# in FIRSTBOOT-FAILED.txt and firstboot.log.
rm -f "$BOOT/firstrun.sh"
sed -i -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
    -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
echo "firstrun.sh finished with status $status" >>"$LOG"
sync
exit 0

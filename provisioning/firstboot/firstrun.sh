#!/bin/bash
# Raspberry Pi OS Bookworm first-boot hook (the Raspberry Pi Imager convention): cmdline.txt has
# "systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot
#  systemd.unit=kernel-command-line.target"; this runs once, then the system reboots.
# The work is in speaker-node/speaker-firstboot.sh; its log stays on the card for the technician.
set +e
BOOT=/boot/firmware
[ -d "$BOOT/speaker-node" ] || BOOT=/boot
bash "$BOOT/speaker-node/speaker-firstboot.sh" --boot "$BOOT" >>"$BOOT/speaker-node/firstboot.log" 2>&1
status=$?
# Whatever happened, never boot into this hook again: a failure is retried by speaker-firstboot.service
# (installed early by the script) or is visible in firstboot.log.
rm -f "$BOOT/firstrun.sh"
sed -i -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
    -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
echo "firstrun.sh finished with status $status" >>"$BOOT/speaker-node/firstboot.log"
exit 0

#!/bin/sh
# Minimal block hotplug script for `cargo xtask e2e` (Debian's `block` works too, with
# --hotplug debian, but its bash and locking cost tens of seconds under emulation).
# libxl runs it as `block-e2e add|remove` with XENBUS_PATH=backend/vbd/<domid>/<devid>.
case "$1" in
  add)
    dev=$(xenstore-read "$XENBUS_PATH/params") || exit 1
    [ -b "$dev" ] || { xenstore-write "$XENBUS_PATH/hotplug-error" "$dev is not a block device" \
                         "$XENBUS_PATH/hotplug-status" error; exit 1; }
    # blkback reads the device number as hex major:minor.
    xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c %t:%T "$dev")" \
                   "$XENBUS_PATH/physical-device-path" "$dev" \
                   "$XENBUS_PATH/hotplug-status" connected
    ;;
  remove) ;;
esac
exit 0

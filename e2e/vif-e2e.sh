#!/bin/sh
# Minimal vif hotplug script for `cargo xtask e2e`: puts the backend interface on its bridge.
# libxl runs it as `vif-e2e online|offline|add|remove` with vif=<interface> and XENBUS_PATH.
case "$1" in
  online|add)
    bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null || echo xenbr0)
    ip link set dev "$vif" up && brctl addif "$bridge" "$vif" || {
      xenstore-write "$XENBUS_PATH/hotplug-error" "cannot add $vif to $bridge" "$XENBUS_PATH/hotplug-status" error
      exit 1; }
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
  offline|remove)
    bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null || echo xenbr0)
    brctl delif "$bridge" "$vif" 2>/dev/null; ip link set dev "$vif" down 2>/dev/null
    ;;
esac
exit 0

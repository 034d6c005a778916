#!/bin/busybox sh
# PV guest /init for `cargo xtask e2e`: brings up blkfront and netfront, writes the disk, reports.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
K=/lib/modules/$(uname -r)/kernel
insmod $K/drivers/block/xen-blkfront.ko; insmod $K/drivers/net/xen-netfront.ko
i=0; while [ ! -b /dev/xvda ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
if [ -b /dev/xvda ]; then
  echo "HELLO-FROM-DOMU-VIA-BLKBACK" | dd of=/dev/xvda conv=fsync 2>/dev/null \
    && echo "E2E-DOMU-CHECK blkfront PASS wrote xvda" || echo "E2E-DOMU-CHECK blkfront FAIL write to xvda failed"
else
  echo "E2E-DOMU-CHECK blkfront FAIL no /dev/xvda"
fi
if ip link set eth0 up 2>/dev/null; then
  echo "E2E-DOMU-CHECK netfront PASS eth0 $(cat /sys/class/net/eth0/address)"
else
  echo "E2E-DOMU-CHECK netfront FAIL no eth0"
fi
echo "E2E-DOMU-UP"
# dom0 destroys the guest once it has read the frontends' state; this bounds the wait otherwise.
sleep 300
poweroff -f

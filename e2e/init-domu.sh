#!/bin/busybox sh
# PV guest /init for `cargo xtask e2e`: brings up blkfront and netfront, checks its disks, reports.
# xvda is served by the kernel's xen-blkback; xvdb (hot-plugged by dom0 with backendtype=qdisk)
# by the project's blkbackd. Lines for dom0: E2E-DOMU-CHECK <name> PASS|FAIL <detail>,
# E2E-DOMU-METRIC <name> <value> <unit>, E2E-DOMU-MD5 <what> <md5>, E2E-DOMU-UP (all done);
# E2E-DOMU-USERSPACE first, as /init starts.
echo "E2E-DOMU-USERSPACE"
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
K=/lib/modules/$(uname -r)/kernel
insmod $K/drivers/block/xen-blkfront.ko; insmod $K/drivers/net/xen-netfront.ko
check() { n=$1; r=$2; shift 2; echo "E2E-DOMU-CHECK $n $r $*"; }
waitfor() { i=0; while [ ! -e "$1" ] && [ $i -lt $2 ]; do usleep 100000; i=$((i+1)); done; [ -e "$1" ]; }
# Started for a part of dom0's run (`e2e_part=<name>` on the command line): that part's guest
# script (e2e/guest-parts/<name>.sh) does the rest.
part=$(sed -n 's/.*e2e_part=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$part" ]; then
  if [ -f "/parts/$part.sh" ]; then . "/parts/$part.sh"; else check "part:$part" FAIL "no /parts/$part.sh in the guest"; fi
  while :; do sleep 1; done
fi
# Started by xapi (`e2e=xapi` on the command line): one disk (xvda, served by blkbackd as this
# domain's device model), with `e2e_kbd` a second one (xvdb, the kernel's blkback), and eth0, then count on the console until dom0's clean shutdown or
# reboot (the kernel acknowledges control/shutdown and runs /sbin/poweroff or /sbin/reboot)
# or suspend (the kernel suspends itself and runs on where it stopped once resumed).
if grep -q 'e2e=xapi' /proc/cmdline; then
  mkdir -p /sbin
  printf '#!/bin/sh\nexec /bin/busybox poweroff -f\n' > /sbin/poweroff
  printf '#!/bin/sh\nexec /bin/busybox reboot -f\n' > /sbin/reboot
  chmod 755 /sbin/poweroff /sbin/reboot
  waitfor /dev/xvda 100
  waitfor /sys/class/net/eth0 100
  if [ -b /dev/xvda ]; then
    echo "HELLO-FROM-XAPI-GUEST-VIA-BLKBACKD" | dd of=/dev/xvda conv=fsync 2>/dev/null \
      && check xapi-blkfront PASS "wrote xvda" || check xapi-blkfront FAIL "write to xvda failed"
  else
    check xapi-blkfront FAIL "no /dev/xvda"
  fi
  # xvdb, when dom0 gives one (e2e_kbd): the kernel's blkback serves it. Read dom0's marker,
  # write ours at 4 KiB.
  if grep -q 'e2e_kbd' /proc/cmdline; then
    if waitfor /dev/xvdb 100 && [ -b /dev/xvdb ]; then
      echo "E2E-DOMU-KBD-READ $(dd if=/dev/xvdb bs=64 count=1 2>/dev/null | tr -d '\000\n')"
      echo "HELLO-FROM-XAPI-GUEST-VIA-KERNEL-BLKBACK" | dd of=/dev/xvdb bs=512 seek=8 conv=fsync 2>/dev/null \
        && echo "E2E-DOMU-KBD-WROTE" && check xapi-kernel-blkfront PASS "read and wrote xvdb" \
        || check xapi-kernel-blkfront FAIL "write to xvdb failed"
    else
      check xapi-kernel-blkfront FAIL "no /dev/xvdb"
    fi
  fi
  if ip link set eth0 up 2>/dev/null; then
    check xapi-netfront PASS "eth0 $(cat /sys/class/net/eth0/address)"
  else
    check xapi-netfront FAIL "no eth0"
  fi
  # A guest agent's report, as xapi_guest_agent reads it: XS_WRITE (type 11) messages on
  # /dev/xen/xenbus, paths relative to this domain's directory, data/updated last.
  le32() { printf "\\$(printf %o $(($1 & 255)))\\$(printf %o $((($1 >> 8) & 255)))\\$(printf %o $((($1 >> 16) & 255)))\\$(printf %o $((($1 >> 24) & 255)))"; }
  xs_write() { { le32 11; le32 0; le32 0; le32 $((${#1} + 1 + ${#2})); printf '%s\000%s' "$1" "$2"; } > /dev/xen/xenbus; }
  ip addr add 10.0.42.2/24 dev eth0 2>/dev/null
  xs_write data/os_name "Linux $(uname -r) e2e guest" && xs_write data/os_uname "$(uname -r)" \
    && xs_write data/os_distro busybox && xs_write attr/vif/0/ipv4/0 10.0.42.2 \
    && xs_write data/updated 1 \
    && check xapi-guest-agent PASS "wrote data/os_* and attr/vif/0/ipv4/0 through /dev/xen/xenbus" \
    || check xapi-guest-agent FAIL "writing /dev/xen/xenbus failed ($(ls -l /dev/xen 2>&1 | tr '\n' ' '))"
  echo "E2E-DOMU-UP"
  # A counter on the console every second: dom0 sees it go on across a suspend and resume.
  n=0; while :; do n=$((n+1)); echo "E2E-COUNTER $n"; sleep 1; done
fi
waitfor /dev/xvda 100
waitfor /sys/class/net/eth0 100
if [ -b /dev/xvda ]; then
  echo "HELLO-FROM-DOMU-VIA-BLKBACK" | dd of=/dev/xvda conv=fsync 2>/dev/null \
    && check blkfront PASS "wrote xvda" || check blkfront FAIL "write to xvda failed"
else
  check blkfront FAIL "no /dev/xvda"
fi
if ip link set eth0 up 2>/dev/null; then
  check netfront PASS "eth0 $(cat /sys/class/net/eth0/address)"
else
  check netfront FAIL "no eth0"
fi

# ---- xvdb: the project's userspace blkback ----
# field NAME LINE: the value of NAME=... in a blk-load line.
field() { v=${2##*$1=}; echo "${v%% *}"; }
if waitfor /dev/xvdb 600; then
  # 1. Read the whole disk (dom0 filled it with random bytes and compares the sum).
  echo "E2E-DOMU-MD5 xvdb-read $(md5sum < /dev/xvdb | cut -d' ' -f1)"
  # 2. Write 1 MiB at 4 MiB with O_DIRECT, read it back past the page cache.
  dd if=/dev/urandom of=/tmp/w bs=64k count=16 2>/dev/null
  ws=$(md5sum < /tmp/w | cut -d' ' -f1)
  if dd if=/tmp/w of=/dev/xvdb bs=64k seek=64 oflag=direct conv=fsync 2>/dev/null; then
    rs=$(dd if=/dev/xvdb bs=64k skip=64 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$rs" = "$ws" ] && check rust-blkback-readback PASS "1 MiB written with O_DIRECT read back: $ws" \
      || check rust-blkback-readback FAIL "wrote $ws, read back $rs"
  else
    check rust-blkback-readback FAIL "O_DIRECT write to xvdb failed"
  fi
  echo "E2E-DOMU-MD5 xvdb-write $ws"
  # 3. The issue's workloads (4 KiB random, 64 KiB sequential; read, write; 1 and 32 in
  # flight; direct I/O) on the kernel's blkback (xvda) and ours (xvdb) in the upper 8 MiB of
  # the disks: three rounds of half a second each, alternating which goes first, and the
  # median of each (a busy emulated machine makes single runs noisy).
  failed=""
  run() { blk-load --dev /dev/$1 --op $op --bs $bs --pattern $pat --qd $qd --ms 500 --offset 8388608 --span 8388608 2>&1; }
  med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
  for op in read write; do
    for w in "4096 random 4k-rand" "65536 seq 64k-seq"; do
      set -- $w; bs=$1; pat=$2; name=$3
      for qd in 1 32; do
        c=$op-$name-qd$qd; ks=""; os=""; kl=""; ol=""; bad=""
        for r in 1 2 3; do
          if [ $r = 2 ]; then o=$(run xvdb); k=$(run xvda); else k=$(run xvda); o=$(run xvdb); fi
          echo "kernel: $k"; echo "ours:   $o"
          case "$o" in *kib_s=*) ;; *) bad=1 ;; esac
          ks="$ks $(field kib_s "$k")"; os="$os $(field kib_s "$o")"
          kl="$kl $(field mean_us "$k")"; ol="$ol $(field mean_us "$o")"
        done
        kk=$(med $ks); ok=$(med $os)
        case "$bad$ok" in ''|*[!0-9]*) failed="$failed $c"; continue ;; esac
        case "$kk" in ''|*[!0-9]*) kk=0 ;; esac
        echo "E2E-DOMU-METRIC guest-blk-$c:kernel-blkback $kk KiB/s"
        echo "E2E-DOMU-METRIC guest-blk-$c:blkbackd $ok KiB/s"
        [ "$kk" -gt 0 ] && echo "E2E-DOMU-METRIC guest-blk-$c:blkbackd/kernel $(( ok * 100 / kk )) %"
        if [ $qd = 1 ] && [ $bs = 4096 ]; then
          echo "E2E-DOMU-METRIC guest-blk-$c:mean-latency-kernel $(med $kl) us"
          echo "E2E-DOMU-METRIC guest-blk-$c:mean-latency-blkbackd $(med $ol) us"
        fi
      done
    done
  done
  [ -z "$failed" ] && check rust-blkback-bench PASS "blk-load workloads ran on xvda and xvdb" \
    || check rust-blkback-bench FAIL "on xvdb:$failed"
  # blkfront turns a feature off when the backend fails it (e.g. "empty flush op failed").
  dmesg | grep 'blkfront: xvd' > /tmp/bf
  if grep -q 'xvdb.*failed' /tmp/bf; then
    check rust-blkback-features FAIL "$(grep xvdb /tmp/bf | tr '\n' ' ')"
  else
    check rust-blkback-features PASS "$(grep xvdb /tmp/bf | tail -1 | sed 's/.*xvdb: //')"
  fi
else
  check rust-blkback FAIL "no /dev/xvdb after 60 s"
fi
echo "E2E-DOMU-UP"
# dom0 destroys the guest once it has read the frontends' state; this bounds the wait otherwise.
# Meanwhile a heartbeat on the console, for dom0's `xl console` check.
i=0
while [ $i -lt 300 ]; do echo "E2E-DOMU-ALIVE $i"; sleep 1; i=$((i+1)); done
poweroff -f

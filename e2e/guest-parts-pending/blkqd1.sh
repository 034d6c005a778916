# Guest of the `blkqd1` part (sourced by the guest's /init; `check` and `waitfor` are there).
# xvda is served by the kernel's blkback, xvdb by blkbackd. For each workload and disk
# (alternating which goes first) it prints `QD1-GO <case>`, waits a second (dom0 takes its
# first sample then), runs blk-load for 2 s, prints `QD1-DONE <case> <blk-load line> gints=N`
# (N: this guest's blkif interrupts during the run, the backend's notifications: only the disk
# under test is busy then) and waits again. `QD1-END` once all ran.
arg() { sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
tag=$(arg qd1_tag)
# gints: interrupts of the blkif rings so far (/proc/interrupts lines named blkif).
gints() { awk '$NF == "blkif" { for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' /proc/interrupts; }
if waitfor /dev/xvda 600 && waitfor /dev/xvdb 600; then
  # Warm both: the first reads of a loop device go to its backing file.
  for d in xvda xvdb; do dd if=/dev/$d of=/dev/null bs=64k skip=128 count=128 iflag=direct 2>/dev/null; done
  n=0
  for w in "read 4096 random 4k-read" "read 65536 seq 64k-read" "write 4096 random 4k-write" \
    "write 65536 seq 64k-write" "read 4096 random 4k-read-qd32:32" \
    "write 65536 seq 64k-write-qd32:32"; do
    set -- $w; op=$1; bs=$2; pat=$3; name=${4%%:*}; qd=1
    case "$4" in *:*) qd=${4##*:} ;; esac
    n=$((n+1))
    if [ $((n % 2)) = 0 ]; then order="xvdb xvda"; else order="xvda xvdb"; fi
    for d in $order; do
      c="$tag:$name:$d"
      echo "QD1-GO $c"; sleep 1
      g0=$(gints)
      out=$(blk-load --dev /dev/$d --op $op --bs $bs --pattern $pat --qd $qd --ms 2000 --offset 8388608 --span 8388608 2>&1)
      g1=$(gints)
      echo "QD1-DONE $c $out gints=$((g1 - g0))"; sleep 1
    done
  done
  check "qd1-$tag:guest" PASS "ran the workloads on xvda and xvdb"
else
  check "qd1-$tag:guest" FAIL "no xvda or xvdb: $(ls /dev/xvd* 2>&1 | tr '\n' ' ')"
fi
echo "QD1-END $tag"

# Ballooning on real Xen through the project's xapi (squeezed in toolstack/src/memory.rs) with
# real Linux PV guests whose balloon driver follows memory/target (e2e/guest-parts/balloon.sh
# prints the driver's current_kb every second to its console, which xenconsoled logs).
#   balloon-follows-target        a guest started below its static max follows targets down, up
#   balloon-start-squeezes        a start that needs a ballooned guest's memory squeezes it; one
#                                 that cannot fit fails with HOST_NOT_ENOUGH_FREE_MEMORY
#   balloon-paused-uncooperative  a paused guest asked for memory is left out (inactive), then
#                                 marked memory/uncooperative, with the reason in xapi's log
# Sourced by init-dom0.sh in a subshell: check, ok, up, cs are there.

XS=/tmp/balloon-xapi; XL=/tmp/balloon-xapi.log
rm -rf $XS; mkdir -p $XS
xe() { timeout 300 /e2e/bin/xe -pw e2e "$@"; }
log_of() { echo "/var/log/xen/console/guest-$1.log"; }
# The guest's own view: the last current_kb it printed.
guest_kb() { sed -n 's/.*E2E-BALLOON t=[0-9]* current_kb=\([0-9][0-9]*\).*/\1/p' "$(log_of $1)" 2>/dev/null | tail -n 1; }
# Xen's view: tot_pages and max_pages in KiB (xentop's MEM(k), MAXMEM(k)).
dom_kb() { xentop -b -i 1 2>/dev/null | awk -v n="$1" '$1 == n { print $5; exit }'; }
dom_max() { xentop -b -i 1 2>/dev/null | awk -v n="$1" '$1 == n { print $7; exit }'; }
target_of() { xenstore-read "/local/domain/$(xl domid $1 2>/dev/null)/memory/target" 2>/dev/null; }
abs() { [ "$1" -lt 0 ] && echo $((-$1)) || echo "$1"; }
# Xen's tot_pages may hold a few pages the guest's driver does not count (e.g. pages it
# released at boot for the ISA hole): the domain has converged when it stops moving within
# DOM_TOL of the target; the driver itself reaches its target to the page.
GUEST_TOL=4; DOM_TOL=4096

# converge NAME TARGET_KIB LIMIT_S: waits until the guest's current_kb is within GUEST_TOL of
# TARGET and Xen's tot_pages within DOM_TOL; sets G_MS and D_MS (ms until each got there, or
# empty) and LAST (a line describing the last sample).
converge() {
  c0=$(cs); G_MS=""; D_MS=""
  while [ $(( $(cs) - c0 )) -lt $(($3 * 100)) ]; do
    g=$(guest_kb $1); d=$(dom_kb $1)
    LAST="guest current_kb=${g:-?} domain tot=${d:-?} KiB max=$(dom_max $1) KiB target=$2 KiB"
    if [ -z "$G_MS" ] && [ -n "$g" ] && [ "$(abs $((g - $2)))" -le $GUEST_TOL ]; then G_MS=$(( ($(cs) - c0) * 10 )); fi
    if [ -z "$D_MS" ] && [ -n "$d" ] && [ "$(abs $((d - $2)))" -le $DOM_TOL ]; then D_MS=$(( ($(cs) - c0) * 10 )); fi
    [ -n "$G_MS" ] && [ -n "$D_MS" ] && return 0
    usleep 250000
  done
  return 1
}

start_xapi() {
  NO_COLOR=1 RUST_LOG=toolstack=info /e2e/bin/xapi --hypervisor real --discover --state-dir $XS --root-password e2e \
    --listen none --https-listen 0.0.0.0:443 --clean-shutdown-timeout 30 >> $XL 2>&1 &
  XAPI_PID=$!
  i=0; while ! grep -q '^ready' $XL 2>/dev/null && kill -0 $XAPI_PID 2>/dev/null && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  grep -q '^ready' $XL
}
stop_all() {
  for v in bal-a bal-b bal-c; do xe vm-shutdown vm=$v --force > /dev/null 2>&1; done
  kill $XAPI_PID 2>/dev/null; wait $XAPI_PID 2>/dev/null
  echo "----- balloon: xapi log (memory) -----"; grep -iE 'memory|squeez|reserve|gave up' $XL | tail -40
  echo "----- end of balloon xapi log -----"
}

FREE=$(xl info | sed -n 's/^free_memory *: *//p')
echo "balloon: xl info free_memory=$FREE MiB total_memory=$(xl info | sed -n 's/^total_memory *: *//p') MiB"
# VM A: static max 640 MiB, dynamic 128..512 MiB (built with 640, ballooned to 512 at boot);
# VM B: 640 MiB fixed: with 72 MiB kept free by squeezed, B fits only once A gives ~300 MiB;
# VM C: 512 MiB fixed: cannot fit even with A at its dynamic-min.
A_MAX=640; A_DMIN=128; A_DMAX=512; B_MEM=640; C_MEM=512
if [ -z "$FREE" ] || [ "$FREE" -lt $((A_DMAX + 200)) ] || [ "$FREE" -gt $((A_DMIN + B_MEM + C_MEM)) ]; then
  check balloon-follows-target FAIL "free_memory=${FREE:-?} MiB: the sizes here need 712..1280 MiB free"
  exit 1
fi
start_xapi; rc=$?
if [ $rc != 0 ]; then
  tail -20 $XL
  check balloon-follows-target FAIL "xapi did not start"; check balloon-start-squeezes FAIL "xapi did not start"
  check balloon-paused-uncooperative FAIL "xapi did not start"
  exit 1
fi
mkvm() {
  xe vm-create name-label=$1 memory=$2 PV-kernel=/boot/domu-kernel PV-ramdisk=/boot/domu-initrd \
    "PV-args=console=hvc0 rdinit=/init e2e_part=balloon"
}
# (vm-create sets all four limits to `memory`: static-min comes down first.)
A=$(mkvm bal-a $A_MAX) && xe vm-param-set uuid=$A memory-static-min=$((A_DMIN << 20)) \
  && xe vm-memory-dynamic-range-set uuid=$A min=${A_DMIN}MiB max=${A_DMAX}MiB
rc=$?
echo "balloon: VM A $A: static-max $A_MAX MiB, dynamic $A_DMIN..$A_DMAX MiB (rc=$rc): $(xe vm-list uuid=$A params=memory-static-min,memory-dynamic-min,memory-dynamic-max,memory-static-max | tr -s ' \n' ' ')"

# ---- 1. A follows its targets: at boot (static max -> dynamic max), down, up ----
t0=$(cs)
xe vm-start vm=bal-a > /tmp/bal-start-a.log 2>&1; rc=$?
echo "E2E-METRIC balloon-xe-vm-start-a $(( ($(cs) - t0) * 10 )) ms"
i=0; while [ -z "$(guest_kb bal-a)" ] && [ $i -lt 1200 ]; do usleep 250000; i=$((i+1)); done
echo "balloon: A up: $(grep -m1 'E2E-BALLOON driver' "$(log_of bal-a)") domain tot=$(dom_kb bal-a) max=$(dom_max bal-a) target=$(target_of bal-a) feature-balloon=$(xenstore-read /local/domain/$(xl domid bal-a)/control/feature-balloon 2>&1)"
follow=""; detail=""
for step in boot:$A_DMAX down:256 up:448 range:$A_DMAX; do
  what=${step%%:*}; mib=${step#*:}
  case $what in
    down|up) xe vm-memory-target-set vm=bal-a target=${mib}MiB > /tmp/bal-set.log 2>&1 || follow="$follow $what:xe-failed($(tr '\n' ' ' < /tmp/bal-set.log))" ;;
    range) xe vm-memory-dynamic-range-set vm=bal-a min=${A_DMIN}MiB max=${A_DMAX}MiB > /tmp/bal-set.log 2>&1 || follow="$follow $what:xe-failed($(tr '\n' ' ' < /tmp/bal-set.log))" ;;
  esac
  tgt=$(target_of bal-a)
  [ "$tgt" = $((mib * 1024)) ] || follow="$follow $what:memory/target=$tgt(want $((mib * 1024)))"
  if converge bal-a $((mib * 1024)) 120; then
    echo "E2E-METRIC balloon-$what-to-${mib}MiB-guest $G_MS ms"
    echo "E2E-METRIC balloon-$what-to-${mib}MiB-domain $D_MS ms"
  else
    follow="$follow $what:not-converged($LAST)"
  fi
  detail="$detail $what->${mib}MiB: $LAST;"
  echo "balloon: $what -> $mib MiB: $LAST (guest after ${G_MS:-never} ms, domain after ${D_MS:-never} ms)"
done
[ $rc = 0 ] && [ -z "$follow" ]
ok balloon-follows-target $? "xe vm-start rc=$rc;${follow:+ FAILED:$follow;}$detail"

# ---- 3. B's start squeezes A; C's cannot fit ----
a_t0=$(target_of bal-a); a_g0=$(guest_kb bal-a)
B=$(mkvm bal-b $B_MEM)
t0=$(cs)
xe vm-start vm=bal-b > /tmp/bal-start-b.log 2>&1; rc=$?
tb=$(( ($(cs) - t0) * 10 ))
echo "E2E-METRIC balloon-xe-vm-start-b-squeezing $tb ms"
ps=$(xe vm-list name-label=bal-b params=power-state --minimal)
a_t1=$(target_of bal-a)
# The balancer may give A back what is left over once B runs: A follows whatever it is now.
converge bal-a "${a_t1:-0}" 120; conv=$?
a_t1=$(target_of bal-a)
[ $conv = 0 ] || { converge bal-a "${a_t1:-0}" 60; conv=$?; }
squeeze="B: xe vm-start rc=$rc in $tb ms, power-state=$ps; A: target $a_t0 -> $a_t1 KiB, guest $a_g0 -> $(guest_kb bal-a) KiB, converged=$([ $conv = 0 ] && echo yes || echo no) ($LAST)"
echo "balloon: $squeeze $(tr '\n' ' ' < /tmp/bal-start-b.log)"
n0=$(xl list 2>/dev/null | grep -c .)
C=$(mkvm bal-c $C_MEM)
t0=$(cs)
xe vm-start vm=bal-c > /tmp/bal-start-c.log 2>&1; crc=$?
echo "E2E-METRIC balloon-xe-vm-start-c-refused $(( ($(cs) - t0) * 10 )) ms"
n1=$(xl list 2>/dev/null | grep -c .)
cps=$(xe vm-list name-label=bal-c params=power-state --minimal)
grep -q HOST_NOT_ENOUGH_FREE_MEMORY /tmp/bal-start-c.log; cerr=$?
[ $rc = 0 ] && [ "$ps" = running ] && [ -n "$a_t1" ] && [ "$a_t1" -lt "$a_t0" ] && [ $conv = 0 ] \
  && [ $crc != 0 ] && [ $cerr = 0 ] && [ "$n0" = "$n1" ] && [ "$cps" = halted ]
ok balloon-start-squeezes $? "$squeeze; C ($C_MEM MiB): rc=$crc power-state=$cps domains before=$n0 after=$n1: $(tr '\n' ' ' < /tmp/bal-start-c.log)"

# ---- 2. A paused and asked to give memory: inactive, then uncooperative, with a reason ----
DA=$(xl domid bal-a)
xe vm-pause vm=bal-a > /tmp/bal-pause.log 2>&1; prc=$?
g_before=$(guest_kb bal-a); t_before=$(target_of bal-a)
want_kb=$(( (a_t1 / 1024 - 64) * 1024 )); [ $want_kb -lt $((A_DMIN * 1024)) ] && want_kb=$((A_DMIN * 1024))
lines0=$(grep -c . $XL)
t0=$(cs)
xe vm-memory-target-set vm=bal-a target=${want_kb}KiB > /tmp/bal-set.log 2>&1; src=$?
tset=$(( ($(cs) - t0) * 10 ))
unco=""; i=0
while [ $i -lt 240 ]; do
  xenstore-exists /local/domain/$DA/memory/uncooperative 2>/dev/null && { unco=$(( ($(cs) - t0) * 10 )); break; }
  usleep 250000; i=$((i+1))
done
sleep 6   # one more balancer round, to log the reason with "uncooperative" in it
# (without colours, should the log have them)
tail -n +$((lines0 + 1)) $XL | tr -d '\033' | sed 's/\[[0-9;]*m//g' > /tmp/bal-after-pause.log
inactive=$(grep -E 'gave up on|rebalancing after a memory change' /tmp/bal-after-pause.log | grep "domid=$DA" | grep -m1 'no progress')
reason=$(grep "gave up on" /tmp/bal-after-pause.log | grep "domid=$DA" | grep uncooperative | tail -n 1)
[ -n "$unco" ] || tail -n 30 /tmp/bal-after-pause.log
[ -n "$unco" ] && echo "E2E-METRIC balloon-paused-to-uncooperative $unco ms"
echo "balloon: after pause: target $t_before -> $(target_of bal-a) KiB, tot $(dom_kb bal-a) KiB, guest (paused) $g_before KiB"
echo "balloon: inactive: $inactive"; echo "balloon: reason: $reason"
[ $prc = 0 ] && [ $src = 0 ] && [ -n "$unco" ] && [ -n "$reason" ] && echo "$inactive" | grep -q 'no progress'
ok balloon-paused-uncooperative $? "domain $DA paused, target-set to $want_kb KiB returned after $tset ms (rc=$src); memory/uncooperative after ${unco:-never} ms; log: ${reason:-no 'gave up on' line naming it uncooperative}"
# Unpaused, it frees what it was asked to and is cooperative again.
xe vm-unpause vm=bal-a > /dev/null 2>&1
converge bal-a $want_kb 120; conv=$?
i=0; while xenstore-exists /local/domain/$DA/memory/uncooperative 2>/dev/null && [ $i -lt 120 ]; do usleep 250000; i=$((i+1)); done
! xenstore-exists /local/domain/$DA/memory/uncooperative 2>/dev/null && [ $conv = 0 ]
ok balloon-cooperative-again $? "unpaused: $LAST; memory/uncooperative $(xenstore-exists /local/domain/$DA/memory/uncooperative 2>/dev/null && echo still there || echo removed)"

for v in bal-a bal-b; do echo "----- balloon: console of $v -----"; grep -v 'E2E-BALLOON t=' "$(log_of $v)" | tail -n 15; grep 'E2E-BALLOON t=' "$(log_of $v)" | tail -n 3; done
stop_all
exit 0

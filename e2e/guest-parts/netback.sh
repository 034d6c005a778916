# Guest of the `netback` part (sourced by the guest's /init; `check` and `waitfor` are there).
# Its command line gives nb_ip (this guest's address), nb_peer (dom0's bridge) and nb_tag
# (a name for its lines). It brings eth0 up (it may be hot-plugged: waits up to 60 s), pings
# dom0 with small and with 8000-byte packets (MTU 9000: one frame over several ring slots,
# no IP fragments), then serves net-load for dom0's measurements. Lines for dom0:
#   E2E-DOMU-CHECK nb-<tag>:<check> PASS|FAIL ...
#   NB-READY <tag>       (its checks are done; the net-load server runs if they passed)
arg() { sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
nb_ip=$(arg nb_ip); nb_peer=$(arg nb_peer); nb_tag=$(arg nb_tag)
# IP reassemblies in / fragments made out (ReasmReqds/FragCreates of /proc/net/snmp).
reasm() { awk '/^Ip: [0-9]/ {print $15 "/" $20}' /proc/net/snmp; }
nb_main() {
  if ! waitfor /sys/class/net/eth0 600; then check "nb-$nb_tag:eth0" FAIL "no eth0"; return; fi
  ip addr add "$nb_ip/24" dev eth0 && ip link set eth0 up
  ok=""; i=0
  while [ $i -lt 120 ]; do
    if ping -c 1 -W 2 "$nb_peer" > /dev/null 2>&1; then ok=1; break; fi
    i=$((i+1))
  done
  if [ -z "$ok" ]; then check "nb-$nb_tag:ping" FAIL "no reply from $nb_peer in $i tries"; return; fi
  ping -c 10 -i 0.2 "$nb_peer" > /tmp/ping 2>&1
  got=$(grep -c 'bytes from' /tmp/ping)
  [ "$got" -ge 9 ] && check "nb-$nb_tag:ping" PASS "$got/10 replies from $nb_peer after $i retries" \
    || check "nb-$nb_tag:ping" FAIL "$got/10 replies: $(tail -2 /tmp/ping | tr '\n' ' ')"
  # Large frames: dom0 raises the vif's and bridge's MTU once the vif is Connected.
  if ip link set eth0 mtu 9000; then
    check "nb-$nb_tag:mtu" PASS "eth0 mtu $(cat /sys/class/net/eth0/mtu)"
  else
    check "nb-$nb_tag:mtu" FAIL "netfront refused mtu 9000 (no feature-sg?)"
  fi
  # Until a reply comes whole: before dom0 raised its MTUs, replies come in fragments.
  ok=""; i=0
  while [ $i -lt 60 ]; do
    r0=$(reasm)
    if ping -c 1 -W 2 -s 8000 "$nb_peer" > /dev/null 2>&1 && [ "$(reasm)" = "$r0" ]; then ok=1; break; fi
    i=$((i+1)); sleep 1
  done
  r0=$(reasm)
  ping -c 10 -i 0.2 -s 8000 "$nb_peer" > /tmp/ping 2>&1
  got=$(grep -c 'bytes from' /tmp/ping); r1=$(reasm)
  if [ -n "$ok" ] && [ "$got" -ge 9 ] && [ "$r0" = "$r1" ]; then
    check "nb-$nb_tag:ping-large" PASS "$got/10 replies of 8008 bytes, no IP fragments (reassembled/created $r0 -> $r1)"
  else
    check "nb-$nb_tag:ping-large" FAIL "ok=$ok $got/10 replies, fragments $r0 -> $r1: $(tail -2 /tmp/ping | tr '\n' ' ')"
  fi
  # On the console (dom0 shows its tail); restarted if it ever exits, which is reported.
  ( while :; do net-load serve --listen 0.0.0.0:5001; echo "NB-SERVER-EXIT $nb_tag rc=$?"; sleep 1; done ) &
  usleep 200000
}
nb_main
echo "NB-READY $nb_tag"

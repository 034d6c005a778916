# The balloon part's guest (e2e/parts/balloon.sh starts it with e2e_part=balloon): says it can
# balloon, as a guest agent does (control/feature-balloon, written through /dev/xen/xenbus),
# then prints its balloon driver's view once a second for dom0 to follow in the console log:
#   E2E-BALLOON t=<s> current_kb=<KiB> target_kb=<KiB>
# (sourced by init-domu.sh: check() is there.)
B=/sys/devices/system/xen_memory/xen_memory0
le32() { printf "\\$(printf %o $(($1 & 255)))\\$(printf %o $((($1 >> 8) & 255)))\\$(printf %o $((($1 >> 16) & 255)))\\$(printf %o $((($1 >> 24) & 255)))"; }
# XS_WRITE (type 11), path relative to this domain's directory.
xs_write() { { le32 11; le32 0; le32 0; le32 $((${#1} + 1 + ${#2})); printf '%s\000%s' "$1" "$2"; } > /dev/xen/xenbus; }
i=0; while [ ! -e $B/info/current_kb ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
if [ -e $B/info/current_kb ]; then
  echo "E2E-BALLOON driver current_kb=$(cat $B/info/current_kb) target_kb=$(cat $B/target_kb) max_schedule_delay=$(cat $B/max_schedule_delay 2>/dev/null)"
  xs_write control/feature-balloon 1 && echo "E2E-BALLOON feature-balloon written" \
    || echo "E2E-BALLOON feature-balloon write failed"
else
  echo "E2E-BALLOON no balloon driver: $(ls /sys/devices/system 2>&1 | tr '\n' ' ')"
fi
n=0
while :; do
  echo "E2E-BALLOON t=$n current_kb=$(cat $B/info/current_kb 2>/dev/null) target_kb=$(cat $B/target_kb 2>/dev/null)"
  sleep 1; n=$((n+1))
done

#!/bin/bash
# SIGKILLs a random worker of PID every INTERVAL seconds until it gets TERM,
# then writes how many it killed to COUNT_FILE.
#   chaos_killer.sh PID INTERVAL COUNT_FILE
# A worker is a live direct child of PID with PID's own command name (a
# fork of it): shells PID starts with os.execute are left alone. The loop
# forks nothing (builtins read /proc and pause), so the pace holds on a
# loaded machine.
parent=$1 interval=$2 count_file=$3
kills=0
# the count appears whole (written aside, then renamed): the spec reads it
# as soon as the file exists
report() { echo "$kills" >"$count_file.part" && mv "$count_file.part" "$count_file"; }
trap 'report; exit 0' TERM
exec {pause}<> <(:)
read -r parent_comm <"/proc/$parent/comm"
while [[ -d /proc/$parent ]]; do
  read -r -a kids <"/proc/$parent/task/$parent/children" # no newline at its end: status 1
  if ((${#kids[@]} > 0)); then
    victim=${kids[RANDOM % ${#kids[@]}]}
    read -r comm <"/proc/$victim/comm" 2>/dev/null
    read -r stat <"/proc/$victim/stat" 2>/dev/null
    state=${stat##*) }
    if [[ $comm == "$parent_comm" && ${state%% *} != Z ]] && kill -KILL "$victim" 2>/dev/null; then
      kills=$((kills + 1))
    fi
  fi
  read -r -t "$interval" -u "$pause"
done
report

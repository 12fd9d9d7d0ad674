#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the CI run of the pipeline through sbatch
# (tests/test_slurm.py). Debian/Ubuntu packages, run as root, no systemd, loopback only, no
# accounting database (so Snakemake needs `--slurm-status-command squeue`).
#
#   .ci/slurm_cluster.sh start    # install (apt) if needed, write /etc/slurm/slurm.conf, start daemons
#   .ci/slurm_cluster.sh stop     # stop exactly the daemons `start` started (by PID)
#   .ci/slurm_cluster.sh status   # sinfo
#
# Environment:
#   BASE       state, logs and PID files (default: ${TMPDIR:-/tmp}/ccdn-slurm)
#   FAKE_GPUS  number of fake gres/gpu devices on the node (default 1), so GPU requests schedule
#
# Why /etc/slurm/slurm.conf and not SLURM_CONF: the job-step plugin strips SLURM_* variables before
# the nested `srun`, which then cannot find its configuration. The file is marked as ours; an
# existing slurm.conf without the mark (a real cluster) is never overwritten.
set -euo pipefail

BASE=${BASE:-${TMPDIR:-/tmp}/ccdn-slurm}
FAKE_GPUS=${FAKE_GPUS:-1}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# written by ccdn-repro .ci/slurm_cluster.sh"
STARTED=$BASE/run/started.pids   # "name pid" of every daemon this script started

log() { echo "[slurm_cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  [[ $(id -u) -eq 0 ]] || die "installing SLURM needs root (apt-get)"
  command -v apt-get >/dev/null || die "apt-get not found; install munge, slurmctld, slurmd and slurm-client yourself"
  log "installing munge + SLURM with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
}

start_munge() {
  [[ -s /etc/munge/munge.key ]] || mungekey --create --force
  install -d -o munge -g munge -m 0755 /run/munge
  if [[ -s /run/munge/munged.pid ]] && alive "$(cat /run/munge/munged.pid)"; then
    log "munged already running (not ours; left alone)"
  else
    runuser -u munge -- "$(command -v munged || echo /usr/sbin/munged)"
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/munged.pid)" >> "$STARTED"
  fi
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

write_config() {
  if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
  fi
  local host cpus mem gres_node="" gres_types=""
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') * 9 / 10 ))
  mkdir -p "$BASE"/{state/ctld,state/d,log,run} /etc/slurm
  rm -f "$GRES_CONF"
  if (( FAKE_GPUS > 0 )); then
    # gres/gpu needs File= pointing at character devices; these are /dev/null look-alikes
    mkdir -p "$BASE/fakedev"
    for ((i = 0; i < FAKE_GPUS; i++)); do
      [[ -c $BASE/fakedev/gpu$i ]] || mknod "$BASE/fakedev/gpu$i" c 1 3
    done
    printf '%s\nAutoDetect=off\nNodeName=%s Name=gpu File=%s/fakedev/gpu[0-%d]\n' \
      "$MARK" "$host" "$BASE" $((FAKE_GPUS - 1)) > "$GRES_CONF"
    gres_node="Gres=gpu:$FAKE_GPUS"
    gres_types="GresTypes=gpu"
  fi
  cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=3600
ReturnToService=2
MpiDefault=none
$gres_types
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_daemon() {  # name, pid file
  local name=$1 pidfile=$2
  if [[ -s $pidfile ]] && alive "$(cat "$pidfile")"; then
    log "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  "$name"
  for _ in $(seq 50); do [[ -s $pidfile ]] && break; sleep 0.1; done
  [[ -s $pidfile ]] || die "$name did not start: $(tail -3 "$BASE/log/$name.log" 2>/dev/null)"
  echo "$name $(cat "$pidfile")" >> "$STARTED"
  sleep 1  # a bad config makes the daemon exit right after writing its PID file
  alive "$(cat "$pidfile")" || die "$name exited: $(grep -E 'fatal|error' "$BASE/log/$name.log" | tail -3)"
}

cmd_start() {
  install_packages
  mkdir -p "$BASE/run"
  : >> "$STARTED"
  start_munge
  write_config
  start_daemon slurmctld "$BASE/run/slurmctld.pid"
  start_daemon slurmd "$BASE/run/slurmd.pid"
  local deadline=$((SECONDS + 60))
  until timeout 5 sinfo -h -o %t 2>/dev/null | grep -qx idle; do
    (( SECONDS < deadline )) || die "node never became idle: $(timeout 5 sinfo 2>&1); see $BASE/log"
    sleep 0.5
  done
  timeout 60 srun -t 1 hostname >/dev/null || die "srun does not run jobs; see $BASE/log/slurmctld.log"
  log "cluster up: $(sinfo -h -o '%P %D %t %c CPUs %m MB %G')"
  log "jobcomp log: $BASE/log/jobcomp.txt"
}

cmd_stop() {
  if [[ -f $STARTED ]]; then
    # stop in reverse start order: slurmd, slurmctld, munged
    tac "$STARTED" | while read -r name pid; do
      if alive "$pid"; then
        kill "$pid" && log "stopped $name ($pid)"
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      fi
    done
    rm -f "$STARTED"
  else
    log "nothing recorded in $STARTED; no daemon to stop"
  fi
  # Remove our config too: with a slurm.conf naming a dead controller every SLURM client call (and
  # so every `snakemake` start, whose slurm plugin asks `scontrol show config`) waits ~10 s.
  for f in "$CONF" "$GRES_CONF"; do
    if [[ -f $f ]] && grep -qF "$MARK" "$f"; then rm -f "$f" && log "removed $f"; fi
  done
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status   (BASE=$BASE FAKE_GPUS=$FAKE_GPUS)" >&2; exit 2 ;;
esac

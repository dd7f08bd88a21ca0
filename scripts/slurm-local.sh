#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for CI and for trying profiles/slurm out.
#
#   bash scripts/slurm-local.sh install   apt-get the Debian packages slurmctld slurmd slurm-client munge
#   bash scripts/slurm-local.sh start     write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd (~15 s)
#   bash scripts/slurm-local.sh status    exit 0 when the cluster answers and its node is usable
#   bash scripts/slurm-local.sh stop      stop the daemons this script started (by their PIDs)
#
# Needs root and no systemd: every daemon is started directly and stopped by the PID it wrote. The node
# gets two partitions on itself, "cpu" (default) and "gpu" (no GPU behind it; the names are those of
# profiles/slurm). There is no slurmdbd: Snakemake must poll with `--slurm-status-command squeue`, and
# MinJobAge keeps finished jobs visible to squeue for 10 minutes. Not a production configuration.
#
# Facts this relies on (Debian 12, SLURM 22.05):
# - the config must be /etc/slurm/slurm.conf: the executor plugin's job step drops SLURM_CONF;
# - /run/munge must exist, owned by munge, before munged starts;
# - proctrack/linuxproc and task/none work without cgroups or systemd.
# Settings: MINESCAN_SLURM_DIR (state, logs, PID files; default /var/lib/minescan-slurm),
# MINESCAN_SLURM_CPUS / MINESCAN_SLURM_MEM_MB (what the node announces; default 8 CPUs, 16000 MB; the
# node may announce more than it has, see SlurmdParameters=config_overrides), MINESCAN_SLURM_FAKE_GPUS=N
# (give the node N pretend GPUs, gres gpu backed by /dev/null, to try the GPU lines of profiles/slurm: jobs
# get --gres=gpu:1 scheduled and CUDA_VISIBLE_DEVICES set, but no GPU), MINESCAN_SLURM_FORCE=1 (overwrite an
# /etc/slurm/slurm.conf this script did not write).
set -euo pipefail

DIR=${MINESCAN_SLURM_DIR:-/var/lib/minescan-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by minescan scripts/slurm-local.sh"
CPUS=${MINESCAN_SLURM_CPUS:-8}
MEM_MB=${MINESCAN_SLURM_MEM_MB:-16000}
FAKE_GPUS=${MINESCAN_SLURM_FAKE_GPUS:-0}
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm-local: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

node_name() { local n; n=$(hostname -s 2>/dev/null || uname -n); echo "${n%%.*}"; }

alive() {  # alive PIDFILE: the process named in the file runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; }

cmd_install() {
    if installed; then say "SLURM and munge already installed"; return 0; fi
    need_root
    command -v apt-get >/dev/null || die "apt-get not found: install slurmctld slurmd slurm-client munge yourself"
    # No init system here: keep the packages' maintainer scripts from starting services themselves.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null; } || rc=$?
    [ "$own_policy" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install ${PACKAGES[*]} failed (exit $rc)"
    installed || die "packages installed but slurmctld/slurmd/sbatch/munged still not on PATH"
    say "installed: $(slurmctld -V)"
}

write_config() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF" && [ "${MINESCAN_SLURM_FORCE:-0}" != 1 ]; then
        die "$CONF exists and was not written by this script: refusing to replace it (MINESCAN_SLURM_FORCE=1 does)"
    fi
    local node gres=""; node=$(node_name)
    mkdir -p /etc/slurm "$DIR"/{ctld,spool,log}
    if [ "$FAKE_GPUS" -gt 0 ]; then
        gres=" Gres=gpu:$FAKE_GPUS"
        local devs=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)  # one distinct file per GPU
        [ "$FAKE_GPUS" -le ${#devs[@]} ] || die "MINESCAN_SLURM_FAKE_GPUS: at most ${#devs[@]}"
        { echo "$MARK"; for d in "${devs[@]:0:$FAKE_GPUS}"; do echo "NodeName=$node Name=gpu File=$d"; done; } \
            > /etc/slurm/gres.conf
    elif [ -e /etc/slurm/gres.conf ] && grep -qF "$MARK" /etc/slurm/gres.conf; then
        rm -f /etc/slurm/gres.conf
    fi
    cat > "$CONF" <<EOF
$MARK: a single-node test cluster.
ClusterName=minescan-local
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no systemd, no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: keep finished jobs in slurmctld for squeue (the executor plugin needs >= 3 x its first
# status interval; 600 s leaves room for slow runs)
AccountingStorageType=accounting_storage/none
MinJobAge=600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
# announce CPUs/RealMemory as configured even if the machine has fewer (jobs only share its cores)
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB$gres State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node Default=NO MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"; return 0
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$DIR/munged.pid"   # so that stop ends only the munged started here
            return 0
        fi
        sleep 0.2
    done
    die "munged did not answer (see /var/log/munge/munged.log)"
}

cmd_status() {
    command -v sinfo >/dev/null || { say "not installed"; return 1; }
    [ -e "$CONF" ] || { say "no $CONF"; return 1; }
    local state
    state=$(timeout -s KILL 10 sinfo -h -N -o %t 2>/dev/null | head -n 1) || { say "slurmctld does not answer"; return 1; }
    case "$state" in
        idle* | mix* | alloc* | comp*) say "up: node $(node_name) $state; partitions $(sinfo -h -o %P | tr '\n' ' ')"; return 0 ;;
        *) say "node state '${state:-none}'"; return 1 ;;
    esac
}

cmd_start() {
    need_root
    installed || die "not installed: run '$0 install' first"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && cmd_status 2>/dev/null; then
        say "already running"; return 0
    fi
    local t0=$SECONDS
    write_config
    start_munge
    alive "$DIR/slurmctld.pid" || slurmctld -c -i
    alive "$DIR/slurmd.pid" || slurmd -N "$(node_name)"
    for _ in $(seq 60); do
        if cmd_status 2>/dev/null; then say "started in $((SECONDS - t0)) s"; cmd_status; return 0; fi
        alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" || break
        sleep 1
    done
    say "the node did not become idle (slurmctld $(alive "$DIR/slurmctld.pid" && echo runs || echo died)," \
        "slurmd $(alive "$DIR/slurmd.pid" && echo runs || echo died)); last lines of the logs:"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

stop_pid() {  # stop_pid NAME PIDFILE
    local pidfile=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { say "stopped $1 ($pid)"; rm -f "$pidfile"; return 0; }; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $1 ($pid)"; rm -f "$pidfile"
}

cmd_stop() {
    need_root
    if [ -e "$DIR/slurmctld.pid" ] && alive "$DIR/slurmctld.pid"; then
        # cancel what is still queued or running (jobs of an aborted test), then stop the daemons
        timeout -s KILL 10 squeue -h -o %i 2>/dev/null | xargs -r timeout -s KILL 10 scancel 2>/dev/null || true
    fi
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    stop_pid munged "$DIR/munged.pid"   # only when this script started it
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac

# Helpers shared by scripts/bench.sh and scripts/bench-llm.sh (sourced).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Peak RSS (KiB) of a process, sampled every 100 ms until the file $2 exists.
sample_rss() {
  local pid=$1 stop=$2 peak=0 rss
  while [ ! -e "$stop" ]; do
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.1
  done
  echo "$peak"
}

# CPU seconds (user + system) a process has used so far; 0 for no process.
cpu_s() { [ -n "$1" ] || { echo 0; return; }
  awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Sourced by the scripts that start a throwaway `facevault dev`: `stop_server`
# stops the process in the caller's `server_pid` (SIGTERM, then after 15 s
# SIGKILL to it and its children) and clears `server_pid`.
stop_server() {
    [[ -n ${server_pid:-} ]] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            echo "$(basename "$0"): the server did not stop on SIGTERM; killing it" >&2
            for child in $(ps -o pid= --ppid "$server_pid" 2>/dev/null); do
                kill -KILL "$child" 2>/dev/null || true
            done
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# Sourced by the scripts that run grpcurl: `ensure_grpcurl` puts a working
# grpcurl on PATH, the system's or the test virtual environment's
# (scripts/python-env.sh). Uses the caller's `say` and `die`.
ensure_grpcurl() {
    if command -v grpcurl >/dev/null 2>&1 && grpcurl -version >/dev/null 2>&1; then
        return 0
    fi
    say "grpcurl not found; using the test virtual environment's (scripts/python-env.sh)"
    local py
    py=$("$(dirname "${BASH_SOURCE[0]}")/python-env.sh") || die "the test virtual environment could not be made"
    PATH=$(dirname "$py"):$PATH
    hash -r
    grpcurl -version >/dev/null 2>&1 || die "grpcurl still does not run after installing it"
}

# Shared set-up for scripts/dev and scripts/test: installs what a fresh Debian 12 machine lacks.
# Works with no standard input (CI) and as root or through sudo.

# Debian packages the build and the tests need.
AERODB_APT_PACKAGES=(liburing-dev libssl-dev zlib1g-dev libnuma-dev libargon2-dev pkg-config curl python3-venv prometheus zbar-tools chromium chromium-driver)

aerodb_log() { printf '[aerodb] %s\n' "$*" >&2; }

aerodb_install_packages() {
    local missing=()
    for p in "${AERODB_APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
    aerodb_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq </dev/null
    $sudo apt-get install -y -qq "${missing[@]}" </dev/null
}

aerodb_require_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
    fi
    if ! command -v swift >/dev/null 2>&1; then
        aerodb_log "Swift 6.x is required and is not on PATH (Debian does not package it; install the toolchain from swift.org into /opt/swift)."
        exit 1
    fi
}

# Python packages of the compatibility tests, in a venv inside the repository (git-ignored).
AERODB_PY_PACKAGES=(supabase==2.34.1 pytest tuspy==1.1.0 pyotp==2.9.0 selenium==4.40.0 Django==5.2.19 django-oidc-provider==0.9.0 boto3==1.44.8 awscli==1.46.2)

aerodb_python_venv() {
    if [ ! -x .venv/bin/python ]; then
        aerodb_log "creating .venv for the compatibility tests"
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c 'import supabase, pytest, tusclient, pyotp, selenium, boto3, awscli' >/dev/null 2>&1; then
        aerodb_log "installing ${AERODB_PY_PACKAGES[*]} into .venv"
        .venv/bin/python -m pip install -q "${AERODB_PY_PACKAGES[@]}" </dev/null
    fi
}

#!/usr/bin/env bash
# Builds the runtime image of deploy/Dockerfile from a `kraken` binary built on this host,
# without pulling any base image (for machines that cannot reach an image registry, and the
# container-cluster test):
#
#   cargo build --release -p kraken-cli
#   deploy/build-local-image.sh target/release/kraken kraken:local
#
# It assembles a root file system — the binary, the shared libraries `ldd` lists for it, the
# `kraken` user (uid 10001) in /etc/passwd, the CA roots, /etc/kraken, /var/lib/kraken owned by
# that user, /tmp — and builds it FROM scratch with the runtime stage's settings (USER, WORKDIR,
# EXPOSE, ENTRYPOINT, CMD, ENV, LABEL) read from deploy/Dockerfile, so both images run the same
# way. `DOCKER` names the docker CLI (default: docker); DOCKER_HOST and DOCKER_CONFIG are
# honoured as usual.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 KRAKEN_BINARY IMAGE_TAG" >&2
    exit 2
fi
binary=$1
tag=$2
docker=${DOCKER:-docker}
here=$(cd "$(dirname "$0")" && pwd)
dockerfile=$here/Dockerfile

[[ -x $binary ]] || { echo "$binary is not an executable file" >&2; exit 1; }
command -v ldd >/dev/null || { echo "ldd not found (apt-get install libc-bin)" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/kraken" "$rootfs/tmp" "$context/home"
install -m 0755 "$binary" "$rootfs/usr/local/bin/kraken"

# The dynamic loader and every library the binary links, at the paths the binary looks for
# them (symlinks resolved to the files).
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [[ -z $libraries ]]; then
    echo "ldd listed no libraries for $binary (a static binary needs none: continuing)" >&2
fi
for library in $libraries; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
done

# The users and groups of the runtime stage (groupadd/useradd there), and the CA roots
# (ca-certificates there).
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nkraken:x:10001:10001::/var/lib/kraken:/usr/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nkraken:x:10001:\n' >"$rootfs/etc/group"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
fi
chmod 1777 "$rootfs/tmp"

# The runtime stage's settings: every instruction after `FROM … AS runtime` but the ones that
# change files (RUN, COPY, ADD), which the steps above stand for. Continuation lines are
# joined first.
settings=$(awk '
    /^[[:space:]]*#/ { next }
    { line = line $0 }
    /\\$/ { sub(/\\$/, "", line); next }
    { print line; line = "" }
' "$dockerfile" | awk '
    tolower($1) == "from" { runtime = (tolower($NF) == "runtime"); next }
    runtime && toupper($1) ~ /^(USER|WORKDIR|EXPOSE|ENTRYPOINT|CMD|ENV|LABEL)$/ { print }
')
grep -q '^USER 10001:10001$' <<<"$settings" || {
    echo "deploy/Dockerfile's runtime stage must run as USER 10001:10001 (the user made here)" >&2
    exit 1
}
{
    echo "FROM scratch"
    echo "COPY rootfs/ /"
    echo "COPY --chown=10001:10001 home/ /var/lib/kraken/"
    echo "$settings"
} >"$context/Dockerfile"

DOCKER_BUILDKIT=0 "$docker" build --quiet --tag "$tag" "$context" >/dev/null
echo "built $tag from $binary"

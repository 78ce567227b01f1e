#!/usr/bin/env bash
# Installs what the tests need where it is missing, from Debian's packages:
#   etcdctl (etcd-client): the etcdctl suite drives real members with it;
#   protoc (protobuf-compiler): the `etcd-client` crate, an independent etcd client the tests also
#   use, compiles its protos with it (our own protos need no protoc: protox compiles them).
# Uses sudo only when not root; fails with a clear message where apt-get is not available.
set -euo pipefail

missing=()
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "== installing ${missing[*]} (Debian packages)"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/install-test-deps.sh: ${missing[*]} missing and apt-get is not available;" >&2
    echo "install etcdctl (v3.4 or newer) and protoc on PATH and run this again." >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "scripts/install-test-deps.sh: installing ${missing[*]} needs root or sudo." >&2
        exit 1
    fi
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
for tool in etcdctl protoc; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "scripts/install-test-deps.sh: $tool still not on PATH after installing" >&2
        exit 1
    }
done

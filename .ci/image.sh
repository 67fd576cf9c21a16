#!/usr/bin/env bash
# Builds the image from the unmodified dockerfiles/message_queue/Dockerfile with
# buildah, runs it with podman (host network), probes /healthz and /ready, sends a
# message through it with the CLI, checks that `podman stop` ends it cleanly, and
# that a confirmed message in a durable queue on a named volume survives a restart.
#
# No Docker engine and no registry here, so the two base images the Dockerfile's
# FROM lines name are made locally under those exact names:
#   debian:bookworm-slim       <- debootstrap --variant=minbase bookworm
#   rust:1.95-slim-bookworm    <- that + gcc, libc6-dev, ca-certificates, this
#                                 machine's Rust toolchain and its CA certificates
# Any failure fails CI: nothing here is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> image: %s\n' "$*"; }
fail() { printf 'image check FAILED: %s\n' "$*" >&2; exit 1; }

DOCKERFILE=dockerfiles/message_queue/Dockerfile
WORK=${TERN_CI_WORK:-/var/tmp/tern-ci}
ROOTFS=$WORK/bookworm-minbase
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=localhost/tern:ci
CONTAINER=tern-ci-smoke
# podman's default runtime (crun) fails on this machine's cgroup layout, and its
# default ulimits exceed what root may set here: this shell's open-file limit (at
# most 65536) and 4096 processes (the broker runs a handful of threads).
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
RUN_FLAGS=(--runtime runc --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)

base_image=$(awk '/^FROM/ && !/ AS /{print $2}' "$DOCKERFILE" | tail -1)
builder_image=$(awk '/^FROM/ && / AS builder/{print $2}' "$DOCKERFILE")
[[ -n "$base_image" && -n "$builder_image" ]] || fail "cannot read the FROM lines of $DOCKERFILE"

step "tools"
need=()
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc debootstrap uidmap >/dev/null
fi
buildah --version
podman --version
runc --version | head -1

step "stand-in $base_image (debootstrap minbase bookworm)"
if [[ ! -f $ROOTFS/.complete ]]; then
  rm -rf "$ROOTFS"
  mkdir -p "$WORK"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  touch "$ROOTFS/.complete"
fi
qualified() { case "$1" in */*) echo "docker.io/$1" ;; *) echo "docker.io/library/$1" ;; esac; }
tar --exclude=./.complete -C "$ROOTFS" -c . |
  podman import --change 'CMD ["bash"]' - "$(qualified "$base_image")" >/dev/null

step "stand-in $builder_image (base + gcc + this machine's Rust toolchain)"
sysroot=$(rustc --print sysroot)
toolchain=$(basename "$sysroot")
stamp="$(rustc --version) / $(sha256sum <"$ROOTFS/etc/os-release" | cut -c1-12)"
trap 'podman rm -f "$CONTAINER" >/dev/null 2>&1 || true' EXIT
if [[ $(podman image inspect "$(qualified "$builder_image")" --format '{{index .Labels "tern.ci.stamp"}}' 2>/dev/null) == "$stamp" ]]; then
  echo "up to date ($stamp)"
else
builder=$(buildah from --pull=never "$(qualified "$base_image")")
trap 'buildah rm "$builder" >/dev/null 2>&1 || true; podman rm -f "$CONTAINER" >/dev/null 2>&1 || true' EXIT
buildah run --isolation chroot "$builder" -- sh -c \
  'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null'
# The package registry is reached through this machine's TLS interception, so the
# builder needs the extra CA certificates that update-ca-certificates installed here.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  buildah copy "$builder" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
fi
buildah run --isolation chroot "$builder" -- update-ca-certificates >/dev/null
for part in bin lib libexec; do
  if [[ -d "$sysroot/$part" ]]; then
    buildah copy "$builder" "$sysroot/$part" "/usr/local/rustup/toolchains/$toolchain/$part" >/dev/null
  fi
done
buildah run --isolation chroot "$builder" -- sh -c \
  "mkdir -p /usr/local/cargo/bin && for tool in cargo rustc rustdoc; do ln -sf /usr/local/rustup/toolchains/$toolchain/bin/\$tool /usr/local/cargo/bin/\$tool; done"
buildah config \
  --env RUSTUP_HOME=/usr/local/rustup \
  --env CARGO_HOME=/usr/local/cargo \
  --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label "tern.ci.stamp=$stamp" \
  "$builder"
buildah commit --quiet "$builder" "$(qualified "$builder_image")" >/dev/null
buildah rm "$builder" >/dev/null
fi
podman run --rm "${RUN_FLAGS[@]}" "$(qualified "$builder_image")" cargo --version

step "buildah bud (the unmodified Dockerfile)"
# Docker image format: the OCI format has no HEALTHCHECK.
buildah bud --pull=never --isolation chroot --layers --format docker -f "$DOCKERFILE" -t "$IMAGE" .
podman image inspect "$IMAGE" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} ports={{.Config.ExposedPorts}} size={{.Size}}'
[[ $(podman image inspect "$IMAGE" --format '{{.Config.User}}') == 10001:10001 ]] || fail "image must run as the non-root user 10001"
healthcheck=$(buildah inspect --type image "$IMAGE" |
  python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)["Docker"]["config"].get("Healthcheck", {}).get("Test", [])))')
echo "healthcheck: $healthcheck"
[[ $healthcheck == "CMD tern health" ]] || fail "the image has no HEALTHCHECK running tern health"

step "podman run (host network)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TCP_PORT=$(free_port)
HTTP_PORT=$(free_port)
podman rm -f "$CONTAINER" >/dev/null 2>&1 || true
podman run -d --name "$CONTAINER" --network host "${RUN_FLAGS[@]}" \
  -e TCP_PORT="$TCP_PORT" -e HTTP_PORT="$HTTP_PORT" -e SHUTDOWN_GRACE_SECS=5 "$IMAGE" >/dev/null
TERN=target/release/tern
[[ -x $TERN ]] || cargo build --release --locked
for attempt in $(seq 1 100); do
  if "$TERN" health --http-port "$HTTP_PORT" --path /ready >/dev/null 2>&1; then break; fi
  [[ $(podman inspect "$CONTAINER" --format '{{.State.Running}}') == true ]] ||
    { podman logs "$CONTAINER"; fail "the container exited at start"; }
  ((attempt < 100)) || { podman logs "$CONTAINER"; fail "/ready never answered 200"; }
  sleep 0.1
done
for path in /healthz /ready /metrics; do
  "$TERN" health --http-port "$HTTP_PORT" --path "$path" >/dev/null || fail "$path did not answer 200"
  echo "$path: 200"
done
# The image's own HEALTHCHECK command, run inside the container.
podman exec "$CONTAINER" tern health >/dev/null || fail "HEALTHCHECK command failed inside the container"
echo "HEALTHCHECK command (tern health, in the container): ok"

step "a message through the container with the CLI"
server=127.0.0.1:$TCP_PORT
received=$(mktemp)
"$TERN" sub --server "$server" image.smoke --count 1 >"$received" &
sub_pid=$!
delivered=
for attempt in $(seq 1 100); do
  "$TERN" pub --server "$server" image.smoke "hello from the image" >/dev/null
  if ! kill -0 "$sub_pid" 2>/dev/null; then delivered=yes; break; fi
  sleep 0.1
done
wait "$sub_pid" || fail "tern sub failed"
[[ -n $delivered && $(cat "$received") == "hello from the image" ]] ||
  fail "expected 'hello from the image', got '$(cat "$received")'"
echo "delivered: $(cat "$received")"

step "podman stop: SIGTERM, clean exit"
started=$(date +%s%N)
podman stop --time 30 "$CONTAINER" >/dev/null
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
exit_code=$(podman inspect "$CONTAINER" --format '{{.State.ExitCode}}')
podman logs "$CONTAINER" 2>&1 | tail -3
echo "stopped in ${elapsed_ms} ms, exit code ${exit_code}"
[[ $exit_code == 0 ]] || fail "exit code $exit_code after SIGTERM (137 means it had to be killed)"
((elapsed_ms < 15000)) || fail "took ${elapsed_ms} ms to stop"
podman rm "$CONTAINER" >/dev/null

step "a durable queue across a container restart (named volume)"
VOLUME=tern-ci-data
DURABLE=$CONTAINER-durable
podman rm -f "$DURABLE" >/dev/null 2>&1 || true
podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
podman volume create "$VOLUME" >/dev/null
podman run -d --name "$DURABLE" --network host "${RUN_FLAGS[@]}" \
  -v "$VOLUME:/var/lib/tern" -e STORE_URL=file:///var/lib/tern -e DELIVERY_MODE=queue \
  -e TCP_PORT="$TCP_PORT" -e HTTP_PORT="$HTTP_PORT" -e SHUTDOWN_GRACE_SECS=5 "$IMAGE" >/dev/null
wait_ready() {
  for attempt in $(seq 1 100); do
    if "$TERN" health --http-port "$HTTP_PORT" --path /ready >/dev/null 2>&1; then return 0; fi
    [[ $(podman inspect "$DURABLE" --format '{{.State.Running}}') == true ]] ||
      { podman logs "$DURABLE"; fail "the durable container exited at start"; }
    sleep 0.1
  done
  podman logs "$DURABLE"; fail "/ready never answered 200 (durable container)"
}
wait_ready
# DELIVERY_MODE=queue: a subject nobody listens to gets a queue that keeps it.
"$TERN" pub --server "$server" --confirm durable.smoke "kept across a restart" ||
  fail "the confirmed publish was refused"
podman stop --time 30 "$DURABLE" >/dev/null
[[ $(podman inspect "$DURABLE" --format '{{.State.ExitCode}}') == 0 ]] || fail "unclean stop of the durable container"
podman start "$DURABLE" >/dev/null
wait_ready
timeout 10 "$TERN" sub --server "$server" durable.smoke --queue durable.smoke --count 1 >"$received" ||
  { podman logs "$DURABLE" 2>&1 | tail -20; fail "the queued message did not come back after the restart"; }
[[ $(cat "$received") == "kept across a restart" ]] || fail "expected 'kept across a restart', got '$(cat "$received")'"
echo "after the restart: $(cat "$received")"
podman stop --time 30 "$DURABLE" >/dev/null
podman rm "$DURABLE" >/dev/null
podman volume rm "$VOLUME" >/dev/null
echo "image checks passed"

#!/usr/bin/env bash
# Build docker/Dockerfile without an image registry and run a stage in the image (issue 31):
#   1. a Debian bookworm base made with debootstrap (minbase), imported into podman's storage;
#   2. the Dockerfile built with buildah on it (BASE=that image; TORCH=cuda|cpu passed through);
#   3. `m2s --help`, then `m2s demo-world` + `m2s detect-shots` on a tiny world, inside the image.
#     docker/build.sh [WORK]     (default WORK: /tmp/m2s-image; needs root, debootstrap, buildah, podman)
# The image pulls its Python packages from the package index as `pip install` would (PyPI); nothing
# else is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/m2s-image}
TORCH=${TORCH:-cuda}
BASE=localhost/m2s-base:bookworm
IMAGE=localhost/movies2scenes:latest
# In a sandbox whose cgroup hierarchy crun cannot use ("cgroups in hybrid mode not supported"), RUN
# steps run with chroot isolation and containers without cgroups and with the host's ulimits (crun may not
# raise RLIMIT_NOFILE here); on a normal host the defaults work too.
RUN_FLAGS=${RUN_FLAGS:---cgroups=disabled --ulimit host}
mkdir -p "$WORK"
MARK=.made-by-docker-build  # only folders carrying this mark (made here) are ever deleted
fresh_dir() {  # fresh_dir DIR: empty DIR if this script made it, create it if absent, else refuse
  if [ -e "$1" ] || [ -L "$1" ]; then
    if [ -L "$1" ] || [ ! -d "$1" ] || [ ! -f "$1/$MARK" ]; then
      echo "docker/build.sh: $1 exists and was not made by this script (no $MARK in it); move it away or pick another WORK" >&2
      exit 2
    fi
    rm -rf -- "$1"
  fi
  mkdir -p -- "$1" && touch -- "$1/$MARK"
}
for tool in debootstrap buildah podman; do
  command -v $tool >/dev/null || { echo "docker/build.sh: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done

if ! podman image exists "$BASE"; then
  if [ ! -f "$WORK/base.tar" ]; then
    echo "== debootstrap: Debian bookworm (minbase) → $WORK/rootfs"
    fresh_dir "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" --exclude="./$MARK" -c . >"$WORK/base.tar.tmp" && mv "$WORK/base.tar.tmp" "$WORK/base.tar"
  fi
  podman import "$WORK/base.tar" "$BASE"
fi

echo "== buildah: docker/Dockerfile on $BASE (TORCH=$TORCH)"
start=$(date +%s)
# the host's CA bundle, given to pip as a build secret (needed behind a TLS-intercepting proxy)
PIP_CA=${PIP_CA:-/etc/ssl/certs/ca-certificates.crt}  # the system bundle: holds a proxy CA where there is one
SECRET=()
[ -n "$PIP_CA" ] && [ -f "$PIP_CA" ] && SECRET=(--secret "id=pip_ca,src=$PIP_CA")
buildah bud "${SECRET[@]}" --isolation "${ISOLATION:-chroot}" --layers --build-arg BASE="$BASE" --build-arg TORCH="$TORCH" -f docker/Dockerfile -t "$IMAGE" .
echo "== built in $(( $(date +%s) - start )) s: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"

# run a command in the image: podman run (entrypoint m2s); where the OCI runtime cannot start a container
# in this sandbox (crun: "setrlimit RLIMIT_NPROC: Operation not permitted"), buildah run with chroot
# isolation in a working container of the same image, calling the same installed `m2s`
CTR=""
if podman run --rm $RUN_FLAGS "$IMAGE" --help >/dev/null 2>"$WORK/podman-run.err"; then
  in_image() { podman run --rm $RUN_FLAGS -v "$WORK/run:/data" "$IMAGE" "$@"; }
else
  echo "== podman run fails here: $(tail -1 "$WORK/podman-run.err"); using buildah run --isolation chroot"
  CTR=$(buildah from "$IMAGE")
  trap 'buildah rm "$CTR" >/dev/null' EXIT
  in_image() { buildah run --isolation chroot -v "$WORK/run:/data" "$CTR" -- m2s "$@"; }
fi
fresh_dir "$WORK/run"
echo "== m2s --help in the image"
in_image --help | head -5
echo "== m2s demo-world + detect-shots in the image"
in_image demo-world /data/world -c configs/demo.yaml \
  demo_world.num_movies=3 demo_world.num_genres=2 'demo_world.scenes_per_movie=[2, 3]' demo_world.num_users=10
in_image detect-shots -c configs/demo.yaml run_dir=/data/run catalogue=/data/world/catalogue.csv
test -f "$WORK/run/run/shots/DONE.json"
echo "== docker/build.sh: the image builds and runs a stage ($WORK/run/run/shots/DONE.json)"

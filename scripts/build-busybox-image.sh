#!/bin/sh
# Builds a small system-container image in LXD's unified format (metadata.yaml + rootfs/, one tar.gz) from
# Debian's busybox-static, so the lxc driver can be tried and tested without any network access.
# Usage: scripts/build-busybox-image.sh <output.tar.gz>
# Needs /bin/busybox from a static build (apt-get install -y busybox-static); no root needed.
set -eu

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 <output.tar.gz>" >&2
  exit 2
fi
output=$1
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
  echo "$busybox not found (install it with: apt-get install -y busybox-static)" >&2
  exit 1
fi
# A dynamically linked busybox would need the host's libraries inside the container.
if ! "$busybox" --list-full >/dev/null 2>&1; then
  echo "$busybox does not support --list-full (is it busybox-static?)" >&2
  exit 1
fi
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
  echo "$busybox is not statically linked (install busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
rootfs="$work/rootfs"

# Mount points (dev, proc, sys) must exist in the rootfs: LXC mounts onto them, it does not create them.
for d in bin sbin usr/bin usr/sbin etc etc/init.d dev proc sys tmp root run var/log var/run mnt home; do
  mkdir -p "$rootfs/$d"
done
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"

cp "$busybox" "$rootfs/bin/busybox"
chmod 755 "$rootfs/bin/busybox"
# Explicit links instead of `busybox --install -s`, which would need a chroot (and root) to target rootfs/.
# Relative links resolve inside the rootfs from the host too, and survive unpackers (node-tar among them)
# that rewrite absolute link targets.
link_busybox() { # <path relative to rootfs>
  case "$1" in
    bin/*) target=busybox ;;
    */*/*) target=../../bin/busybox ;;
    */*) target=../bin/busybox ;;
    *) target=bin/busybox ;;
  esac
  [ -e "$rootfs/$1" ] || [ -L "$rootfs/$1" ] || ln -s "$target" "$rootfs/$1"
}
"$busybox" --list-full | while read -r applet; do
  case "$applet" in
    bin/busybox | '' | linuxrc) continue ;;
  esac
  mkdir -p "$rootfs/$(dirname "$applet")"
  link_busybox "$applet"
done
# --list-full names sbin/init; make sure of it whatever the busybox build, since LXC starts /sbin/init.
link_busybox sbin/init

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
touch "$rootfs/etc/shadow"
chmod 600 "$rootfs/etc/shadow"
: >"$rootfs/etc/fstab"

# No getty and no console shell: nothing interactive to keep alive with `lxc-start -d`, and nothing that
# holds up a halt. The container runs whatever the image's user adds (respawn lines or /etc/init.d/rcS.d).
cat >"$rootfs/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/sync
EOF

# rcS runs the executable scripts in /etc/init.d/rcS.d in order, so workloads can be added as files. It sets
# no hostname (and the image has no /etc/hostname): the container's hostname is its instance name, from LXC.
cat >"$rootfs/etc/init.d/rcS" <<'EOF'
#!/bin/sh
/bin/mount -a 2>/dev/null
for script in /etc/init.d/rcS.d/*; do
  [ -x "$script" ] && "$script"
done
exit 0
EOF
chmod 755 "$rootfs/etc/init.d/rcS"
mkdir -p "$rootfs/etc/init.d/rcS.d"

case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) arch=$(uname -m) ;;
esac
version=$("$busybox" 2>&1 | head -n 1 | sed -n 's/^BusyBox v\([^ ]*\).*/\1/p')
cat >"$work/metadata.yaml" <<EOF
architecture: $arch
creation_date: $(date +%s)
properties:
  os: busybox
  release: "${version:-unknown}"
  architecture: $arch
  description: BusyBox ${version:-unknown} ($arch) from Debian busybox-static
templates: {}
EOF

mkdir -p "$(dirname "$output")"
# Files belong to root inside the container whoever builds the image.
tar --numeric-owner --owner=0 --group=0 -C "$work" -czf "$output.tmp" metadata.yaml rootfs
mv "$output.tmp" "$output"
echo "$output"

# Shared by .ci/docker-engines and .ci/swarm (sourced, not run).

# The first A.B.N (N from 10 to 250) whose A.B.N.0/24 no interface of this
# machine uses yet; `prefix` is A.B ("172.29").
free_subnet() {
    local prefix=$1 n pattern
    pattern=" ${prefix//./\\.}\\."
    for n in $(seq 10 250); do
        ip -4 -o addr show | grep -q "$pattern$n\\." || { echo "$prefix.$n"; return 0; }
    done
    echo "no free $prefix.N.0/24 subnet" >&2
    return 1
}

# A busybox-static root file system under DIR/rootfs (no image can be
# pulled here: the engines import it); prints its path.
base_rootfs() {
    local rootfs="$1/rootfs" busybox applet
    busybox=$(command -v busybox)
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/home/application"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    echo "$rootfs"
}

# Helpers for the FROM-scratch images (sourced by package.sh and
# package-prometheus.sh): a root filesystem holding a dynamically linked
# binary and exactly the shared libraries it needs, built without pulling
# any base image.

# add_libraries BINARY ROOTFS: every library ldd lists for BINARY, and the
# dynamic loader, at the paths the loader expects.
add_libraries() {
    local binary="$1" rootfs="$2" lib
    ldd "$binary" | awk '/=> \//{print $3; next} $1 ~ /^\//{print $1}' | sort -u | while read -r lib; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
}

# build_image CONTEXT DOCKERFILE TAG: builds CONTEXT (holding rootfs/) with
# DOCKERFILE as its Dockerfile.
build_image() {
    local ctx="$1" dockerfile="$2" tag="$3"
    cp "$dockerfile" "$ctx/Dockerfile"
    docker build -q -t "$tag" "$ctx"
}

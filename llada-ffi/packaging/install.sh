#!/usr/bin/env sh
# Installs libllada (shared and static), include/llada.h, a pkg-config file and a CMake package
# config into PREFIX, so C and C++ hosts can use `pkg-config llada` or `find_package(llada)`.
#
#   cargo build --release -p llada-ffi
#   llada-ffi/packaging/install.sh /usr/local            # or any prefix; PROFILE=debug for debug
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
for lib in libllada.so libllada.a; do
    if [ ! -f "$target/$profile/$lib" ]; then
        echo "$target/$profile/$lib is missing: run cargo build --profile $profile -p llada-ffi first" >&2
        exit 1
    fi
done
mkdir -p "$prefix/lib/pkgconfig" "$prefix/lib/cmake/llada" "$prefix/include"
cp "$target/$profile/libllada.so" "$target/$profile/libllada.a" "$prefix/lib/"
cp "$root/include/llada.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$here/llada.pc.in" >"$prefix/lib/pkgconfig/llada.pc"
cp "$here/lladaConfig.cmake" "$prefix/lib/cmake/llada/"
sed -e "s|@VERSION@|$version|g" "$here/lladaConfigVersion.cmake.in" >"$prefix/lib/cmake/llada/lladaConfigVersion.cmake"
echo "installed llada $version into $prefix"

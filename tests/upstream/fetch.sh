#!/usr/bin/env bash
# Fetches memcached's own test suite: Debian's source package of memcached,
# unpacked once under target/upstream/ (git-ignored) and reused after.
#
# The deb-src entries are derived from the machine's own apt sources: every
# deb822 stanza (sources.list.d/*.sources) or one-line entry (sources.list,
# sources.list.d/*.list) whose suite is the distribution in use
# ($VERSION_CODENAME, its -updates and -security) is copied with
# "Types: deb-src". They go into a private apt configuration under
# target/upstream/apt/, so the system's sources and package lists are left
# as they were; apt-get update and apt-get source run against it only.
#
# Needs dpkg-dev (dpkg-source unpacks the package). Prints the unpacked
# directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${UPSTREAM_DIR:-target/upstream}
MC_VERSION=${UPSTREAM_VERSION:-1.6.18}
SRC=$OUT/memcached-$MC_VERSION

if [ -f "$SRC/t/lib/MemcachedTest.pm" ] && [ -f "$SRC/timedrun.c" ]; then
    echo "$SRC"
    exit 0
fi

command -v dpkg-source >/dev/null || {
    echo "fetch.sh: dpkg-source is missing (apt-get install dpkg-dev)" >&2; exit 1; }

. /etc/os-release
CODENAME=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
ETC=${APT_ETC:-/etc/apt}

APT=$(realpath -m "$OUT/apt")
rm -rf "$APT"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/prefs.d"
LIST=$APT/sources.list.d/deb-src.sources

# A suite is ours if it is the codename or codename-something.
ours() { case " $1 " in *" $CODENAME "*|*" $CODENAME-"*) return 0;; esac; return 1; }

# deb822 stanzas: blank-line separated; keep those with one of our suites,
# replace their Types line.
for f in "$ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v codename="$CODENAME" '
        function flush() {
            if (n && keep && enabled) {
                for (i = 1; i <= n; i++) print lines[i]
                print ""
            }
            n = 0; keep = 0; enabled = 1
        }
        BEGIN { n = 0; keep = 0; enabled = 1 }
        /^[ \t]*$/ { flush(); next }
        /^#/ { next }
        {
            line = $0
            if (tolower($1) == "types:") line = "Types: deb-src"
            if (tolower($1) == "enabled:" && tolower($2) == "no") enabled = 0
            if (tolower($1) == "suites:")
                for (i = 2; i <= NF; i++)
                    if ($i == codename || index($i, codename "-") == 1) keep = 1
            lines[++n] = line
        }
        END { flush() }
    ' "$f" >> "$LIST"
done

# One-line entries: "deb [options] uri suite component...".
for f in "$ETC"/sources.list "$ETC"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    while read -r type rest; do
        [ "$type" = deb ] || continue
        words=($rest)
        i=0
        if [[ ${words[0]} == \[* ]]; then
            while [[ ${words[$i]} != *\] ]]; do i=$((i + 1)); done
            i=$((i + 1))
        fi
        suite=${words[$((i + 1))]:-}
        ours "$suite" && echo "deb-src $rest" >> "$APT/sources.list.d/deb-src.list"
    done < "$f"
done

if ! grep -qs . "$LIST" "$APT/sources.list.d/deb-src.list"; then
    echo "fetch.sh: no apt source for $CODENAME found under $ETC" >&2
    exit 1
fi

APT_OPTS=(
    -o "Dir::Etc::sourcelist=/dev/null"
    -o "Dir::Etc::sourceparts=$APT/sources.list.d"
    -o "Dir::Etc::preferencesparts=$APT/prefs.d"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache=$APT/cache"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none"
)
apt-get "${APT_OPTS[@]}" -q update
mkdir -p "$OUT/download"
# The version Debian ships for this distribution (its security update if
# there is one); the unpacked directory is memcached-<upstream version>.
(cd "$OUT/download" && apt-get "${APT_OPTS[@]}" -q source memcached)
got=$(cd "$OUT/download" && ls -d memcached-*/ | head -n 1)
got=${got%/}
if [ "$got" != "memcached-$MC_VERSION" ]; then
    echo "fetch.sh: expected memcached-$MC_VERSION, apt-get source gave $got" >&2
    exit 1
fi
rm -rf "$SRC"
mv "$OUT/download/$got" "$SRC"
rm -rf "$OUT/download" "$APT"
echo "$SRC"

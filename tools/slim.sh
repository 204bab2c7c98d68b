#!/usr/bin/env bash
# A device call carries the tracked tree plus its `carry` paths, 64 MiB in all. The device
# scripts (tools/bench/device.sh, tools/train/device.sh) need only part of the tree, so for the
# call they take the rest out of git's index; the files stay on disk, ignored through
# .git/info/exclude, and `unslim` right after the call puts everything back (nothing to commit).
#
#   bash tools/slim.sh slim CARRY PATH...   # untrack PATHs; report tree + CARRY sizes
#   bash tools/slim.sh unslim               # restore the index and the exclude file
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE=.git/info/exclude
MARK="# synfer device slim"

case "${1:-}" in
slim)
  carry=${2:?usage: slim.sh slim CARRY PATH...}
  shift 2
  git diff --quiet && git diff --cached --quiet || { echo "commit first: slim edits the index" >&2; exit 2; }
  grep -qx "$MARK" $EXCLUDE 2>/dev/null && { echo "already slim: run unslim first" >&2; exit 2; }
  echo "$MARK" >>$EXCLUDE
  for p in "$@"; do
    [ -e "$p" ] || continue
    git rm -r -q --cached "$p"
    echo "/$p/" >>$EXCLUDE
  done
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  extra=$(du -sb "$carry" | cut -f1)
  awk -v t="$tree" -v c="$extra" -v n="$carry" 'BEGIN {
    printf "tracked tree now %.1f MiB + %s %.1f MiB = %.1f MiB (must stay under 64)\n",
      t / 1048576, n, c / 1048576, (t + c) / 1048576; exit (t + c >= 64 * 1048576) }'
  ;;
unslim)
  paths=$(sed -n "/^$MARK\$/,\$p" $EXCLUDE | sed -n 's|^/\(.*\)/$|\1|p')
  # shellcheck disable=SC2086
  [ -z "$paths" ] || git reset -q -- $paths
  sed -i "/^$MARK\$/,\$d" $EXCLUDE
  git status --short | head
  echo "index restored"
  ;;
*)
  sed -n 2,9p "$0"
  exit 2
  ;;
esac

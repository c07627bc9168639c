#!/bin/sh
# Example backup script for the nightly_backup job of jobs.yaml.
# Archives $BACKUP_SRC into $BACKUP_DEST/backup-YYYYmmdd-HHMMSS.tar.gz and keeps the newest 7.
set -eu
src="${BACKUP_SRC:?set BACKUP_SRC}"
dest="${BACKUP_DEST:?set BACKUP_DEST}"
mkdir -p "$dest"
archive="$dest/backup-$(date +%Y%m%d-%H%M%S).tar.gz"
tar -czf "$archive" -C "$(dirname "$src")" "$(basename "$src")"
echo "wrote $archive ($(du -h "$archive" | cut -f1))"
ls -1t "$dest"/backup-*.tar.gz | tail -n +8 | while read -r old; do
    rm -f -- "$old" && echo "removed old $old"
done

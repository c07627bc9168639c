#!/bin/sh
# Stand-in for the original README's /path/to/your/backup_script.sh.
echo "backup of $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"

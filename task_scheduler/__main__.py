"""``python -m task_scheduler``: the same as the ``task-scheduler`` script."""

import sys

from task_scheduler.cli import main

sys.exit(main())

"""``python -m interlinked.bridge``: the events-queue consumer."""

import sys

from interlinked.bridge.consumer import main

sys.exit(main())

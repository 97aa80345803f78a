"""``python -m flows.analysis.service``: run the analysis service until SIGTERM/SIGINT."""

import sys

from flows.analysis.service.flow import main

sys.exit(main())

import sys

from portanet.app.cli import main

sys.exit(main())

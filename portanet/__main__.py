import sys

from portanet.cli import main

sys.exit(main())

import sys

from crashd.api.cli.main import main

sys.exit(main())

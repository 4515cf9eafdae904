"""
C{python -m bench}: run the benchmark (see L{bench.run}).
"""

import sys

from .run import main

sys.exit(main())

"""`python -m cnnfpga ...` is the `cnnfpga` command."""
import sys

from .cli import main

sys.exit(main())

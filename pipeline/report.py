"""`python -m pipeline.report --output ROOT`: the report of a finished run (after a Dataflow job).
The command users know; the report itself lives in pipeline.tools.report."""
import sys

from pipeline.tools.report import main

if __name__ == '__main__':
    sys.exit(main())

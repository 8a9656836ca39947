"""The Flex Template's entry file (FLEX_TEMPLATE_PYTHON_PY_FILE): a thin launcher.

The launcher runs `python main.py --name=value ...` with the template parameters and Dataflow's own
options; the pipeline itself lives in the installed `pipeline` package.
"""
import sys

from pipeline.cli import main

if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python3
"""`python run_bench.py SUITE.yaml [options]` is `ssmbench run SUITE.yaml [options]`;
`python run_bench.py search SUITE.yaml` and the other subcommands pass through."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_command="run"))

"""`python -m docflow.cli`: the same as the `docflow` console script."""

from docflow.cli import main

main()

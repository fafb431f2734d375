"""``python -m jobpulse``: the same as the ``jobpulse`` console script."""

from jobpulse.cli.main import main

if __name__ == "__main__":
    main()

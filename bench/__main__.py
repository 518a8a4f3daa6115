"""`python -m bench [--quick] [--only NAME ...] [--out FILE]`."""

from .run import main

if __name__ == "__main__":
    main()

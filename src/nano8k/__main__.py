"""`python -m nano8k ...` and `torchrun ... -m nano8k train ...`."""

from nano8k.cli import main

if __name__ == "__main__":
    main()

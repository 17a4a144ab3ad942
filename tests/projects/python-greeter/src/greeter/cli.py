"""The `greet` console script."""
import sys

from greeter import greet


def main():
    names = [arg for arg in sys.argv[1:] if arg != "--loud"] or ["world"]
    for name in names:
        print(greet(name, loud="--loud" in sys.argv[1:]))

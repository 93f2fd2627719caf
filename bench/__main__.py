"""`make bench`: every benchmark, one after the other."""

from bench import catalogue

if __name__ == "__main__":
    catalogue.run()

from graphc.cli import entry_point

entry_point()
